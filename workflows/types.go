// Package workflows holds the Temporal workflow definitions of imprun-server: deterministic
// code only. Workflows reach the database and the agents exclusively through activities, which
// they name by the constants below; the activities package registers its methods under those
// names. Payloads carry ids and hashes, never configuration blobs or secrets.
package workflows

import "time"

// Signal and query names.
const (
	// SignalDeployResult carries an agent's DeployResult to the publish or withdraw run.
	SignalDeployResult = "deploy-result"
	// QueryStatus answers what a run is doing and, while it waits, for what.
	QueryStatus = "status"
)

// Activity names.
const (
	ActPreparePublish = "PreparePublish"
	ActEnqueueDeploy  = "EnqueueDeploy"
	// ActPrepareAndEnqueue is ActPreparePublish and ActEnqueueDeploy in one step (runs since
	// changeLeanStart).
	ActPrepareAndEnqueue = "PrepareAndEnqueue"
	ActClusterPresence   = "ClusterPresence"
	ActFinishPublish     = "FinishPublish"
	ActCancelDeploy      = "CancelDeploy"
	ActBeginWithdraw     = "BeginWithdraw"
)

// Search attribute names, declared on the Temporal namespace by `make run` and the harness.
const (
	SATenantID  = "TenantId"
	SAClusterID = "ClusterId"
	SAProductID = "ProductId"
	SAPublishID = "PublishId"
)

// PublishWorkflowID is the deterministic id of the run that deploys a revision.
func PublishWorkflowID(publishID string, revision int) string {
	return "publish/" + publishID + "/" + itoa(revision)
}

// WithdrawWorkflowID is the deterministic id of the run that withdraws a publish.
func WithdrawWorkflowID(publishID string, revision int) string {
	return "withdraw/" + publishID + "/" + itoa(revision)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// PublishInput starts a PublishWorkflow.
type PublishInput struct {
	PublishID  string
	TenantID   string
	ClusterID  string
	ProductID  string
	Revision   int
	RollbackOf int // >0: the revision whose snapshot this one copies
	Actor      string
	Deadline   time.Duration
	// Shape is the newest change of PublishWorkflow the starter knows the run takes
	// (PublishShape when this code starts it). A run takes the changes up to its shape without
	// asking workflow.GetVersion, which would record a marker and upsert the
	// TemporalChangeVersion search attribute on every publish; runs started before the field
	// existed have 0 and ask as they did.
	Shape int `json:",omitempty"`
}

// PublishShapeLeanStart is the shape of a run that takes changeLeanStart from its input.
const PublishShapeLeanStart = 1

// PublishShape is the shape of every publish run this code starts.
const PublishShape = PublishShapeLeanStart

// WithdrawInput starts a WithdrawWorkflow.
type WithdrawInput struct {
	PublishID string
	TenantID  string
	ClusterID string
	ProductID string
	Revision  int
	Reason    string
	Actor     string
	Deadline  time.Duration
	// CancelWorkflowID is the publish run still deploying, cancelled before withdrawing.
	CancelWorkflowID string
}

// PrepareInput asks the activity to validate and freeze a revision.
type PrepareInput struct {
	PublishInput
	WorkflowID string
}

// PrepareResult is the frozen revision.
type PrepareResult struct {
	Checksum string
}

// PreparedDeploy is the frozen revision and its queued DeployCommand.
type PreparedDeploy struct {
	Checksum  string
	CommandID string
}

// DeployCommandInput hands a deploy or withdraw command to the agent outbox.
type DeployCommandInput struct {
	PublishID  string
	ClusterID  string
	Revision   int
	Checksum   string
	Action     string // apply or withdraw
	WorkflowID string
}

// DeployCommandResult names the queued command.
type DeployCommandResult struct {
	CommandID string
}

// FinishInput records the outcome of a run.
type FinishInput struct {
	PublishID  string
	Revision   int
	WorkflowID string
	Status     string // the publish status to write; empty writes none (a cancelled run)
	Reason     string
	Event      string
	Actor      string
	AgentID    string
	Message    string
}

// DeployResultSignal is one agent's result, as the agent gateway passes it on.
type DeployResultSignal struct {
	CommandID string `json:"command_id"`
	AgentID   string `json:"agent_id"`
	Status    string `json:"status"` // succeeded or failed
	Message   string `json:"message"`
	Checksum  string `json:"checksum"`
	Revision  int    `json:"revision"`
}

// AgentPresence is one agent of the target cluster as last seen.
type AgentPresence struct {
	AgentID         string     `json:"agent_id"`
	Name            string     `json:"name"`
	Status          string     `json:"status"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
	OfflineSince    *time.Time `json:"offline_since"`
}

// ClusterPresence is the target cluster's agents.
type ClusterPresence struct {
	ClusterID   string          `json:"cluster_id"`
	ClusterName string          `json:"cluster_name"`
	Agents      []AgentPresence `json:"agents"`
	CheckedAt   time.Time       `json:"checked_at"`
}

// WaitState is the answer of the status query.
type WaitState struct {
	Phase        string               `json:"phase"`  // preparing, waiting_for_result, finishing, done
	Action       string               `json:"action"` // apply or withdraw
	PublishID    string               `json:"publish_id"`
	Revision     int                  `json:"revision"`
	ClusterID    string               `json:"cluster_id"`
	CommandID    string               `json:"command_id"`
	WaitingSince time.Time            `json:"waiting_since"`
	Deadline     time.Time            `json:"deadline"`
	Presence     ClusterPresence      `json:"presence"`
	Results      []DeployResultSignal `json:"results"`
	Outcome      string               `json:"outcome"`
}

// BeginWithdrawInput marks the publish WITHDRAWING.
type BeginWithdrawInput struct {
	PublishID  string
	WorkflowID string
	Reason     string
	Actor      string
}

// BeginWithdrawResult is the revision being withdrawn and its checksum.
type BeginWithdrawResult struct {
	Revision int
	Checksum string
}

// CancelDeployInput names the run to cancel.
type CancelDeployInput struct {
	WorkflowID string
}
