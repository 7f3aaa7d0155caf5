package workflows

import "time"

// Rollout signals: each carries a RolloutCommand. REST sends them with source "rest"; the
// Temporal CLI sends the same JSON (source defaults to temporal-cli).
const (
	SignalRolloutPause   = "pause"
	SignalRolloutResume  = "resume"
	SignalRolloutApprove = "approve"
	SignalRolloutAbort   = "abort"
	SignalRolloutRetry   = "retry"
	// SignalRolloutSupersede is sent by a newer rollout of the same product.
	SignalRolloutSupersede = "supersede"
)

// Rollout activities and search attribute.
const (
	ActClaimRolloutCluster = "ClaimRolloutCluster"
	ActSaveRollout         = "SaveRollout"
	SARolloutID            = "RolloutId"
)

// RolloutVerbs are the signals a person may send, in the order the docs list them.
var RolloutVerbs = []string{SignalRolloutPause, SignalRolloutResume, SignalRolloutApprove, SignalRolloutAbort, SignalRolloutRetry}

// RolloutWorkflowID is the deterministic id of a rollout's run.
func RolloutWorkflowID(rolloutID string) string { return "rollout/" + rolloutID }

// RolloutWaveInput is one wave: its clusters in order, how many deploy at once, its gate.
type RolloutWaveInput struct {
	Clusters       []string
	MaxConcurrency int
	Gate           string // auto or manual: manual waits for approve before the wave starts
}

// RolloutInput starts a RolloutWorkflow. The publish fields stay in the rollout's row; the
// run carries ids only.
type RolloutInput struct {
	RolloutID        string
	TenantID         string
	ProductID        string
	Actor            string
	Waves            []RolloutWaveInput
	MaxFailures      int
	MinSuccessTime   time.Duration
	ProgressDeadline time.Duration
	// Supersede lists the rollouts of the same product whose runs this one replaces.
	Supersede []string
}

// RolloutCommand is the payload of every rollout signal.
type RolloutCommand struct {
	Actor     string `json:"actor"`
	Reason    string `json:"reason"`
	ClusterID string `json:"cluster_id,omitempty"` // retry: the failed cluster
	Source    string `json:"source,omitempty"`     // rest, workflow; temporal-cli when absent
	// SupersededBy is the newer rollout (supersede only).
	SupersededBy string `json:"superseded_by,omitempty"`
}

// RolloutClusterState is one target cluster as the run sees it.
type RolloutClusterState struct {
	ClusterID        string     `json:"cluster_id"`
	Wave             int        `json:"wave"`
	State            string     `json:"state"`
	PublishID        string     `json:"publish_id,omitempty"`
	Revision         int        `json:"revision"`
	PreviousRevision int        `json:"previous_revision"`
	Message          string     `json:"message"`
	Attempts         int        `json:"attempts"`
	StartedAt        *time.Time `json:"started_at,omitempty"`
	DeadlineAt       *time.Time `json:"deadline_at,omitempty"`
	FinishedAt       *time.Time `json:"finished_at,omitempty"`
}

// RolloutWaitingState says what the run waits for (gate, soak, resume, deployments, rollbacks).
type RolloutWaitingState struct {
	For   string     `json:"for,omitempty"`
	Wave  int        `json:"wave"`
	Until *time.Time `json:"until,omitempty"`
}

// RolloutState is the answer of the status query and what SaveRollout writes.
type RolloutState struct {
	Status       string                `json:"status"`
	PauseReason  string                `json:"pause_reason"`
	Reason       string                `json:"reason"`
	Wave         int                   `json:"wave"`
	Failures     int                   `json:"failures"`
	MaxFailures  int                   `json:"max_failures"`
	BudgetLeft   int                   `json:"failure_budget_left"`
	Waiting      RolloutWaitingState   `json:"waiting"`
	SupersededBy string                `json:"superseded_by,omitempty"`
	Ignored      int                   `json:"ignored_signals"`
	Clusters     []RolloutClusterState `json:"clusters"`
}

// RolloutDecision is a command as the run judged it, for the audit log.
type RolloutDecision struct {
	Verb    string
	Command RolloutCommand
	Applied bool
	Problem string // why it did not apply
	Before  string // the status before
}

// SaveRolloutInput writes the run's state: the rollout's status and the clusters that changed,
// with the audit row of a decision when there is one.
type SaveRolloutInput struct {
	RolloutID string
	State     RolloutState // Clusters holds only the changed clusters
	Decision  *RolloutDecision
}

// ClaimRolloutClusterInput asks for the publish run of one cluster: its next revision, or
// (Revert) the way back to PreviousRevision.
type ClaimRolloutClusterInput struct {
	RolloutID        string
	ClusterID        string
	Actor            string
	Revert           bool
	PublishID        string
	PreviousRevision int
	Deadline         time.Duration
}

// ClaimRolloutClusterResult is the claimed run to start as a child, or Busy when another run
// holds the cluster's publish.
type ClaimRolloutClusterResult struct {
	Busy             bool
	WorkflowID       string
	PublishID        string
	Revision         int
	PreviousRevision int
	Publish          *PublishInput
	Withdraw         *WithdrawInput
}
