package workflows

import "time"

// Subscription decision signals. The payload of each is a Decision in JSON; REST handlers and
// the Temporal CLI send exactly the same thing, e.g.
// `temporal workflow signal --workflow-id subscription/<id> --name approve --input '{"actor":"ops@example.com","reason":"ok"}'`.
const (
	SignalApprove = "approve"
	SignalReject  = "reject"
	SignalSuspend = "suspend"
	SignalResume  = "resume"
	SignalCancel  = "cancel"
	// SignalCredentialAck carries an agent's acknowledgement of a credential command.
	SignalCredentialAck = "credential-ack"
)

// Customer activity names.
const (
	ActTransitionSubscription = "TransitionSubscription"
	ActRecordIgnoredSignal    = "RecordIgnoredSignal"
	ActPlanCredentialSync     = "PlanCredentialSync"
	ActConfirmRollout         = "ConfirmRollout" // one cluster a call; only runs started before ConfirmRollouts use it
	ActConfirmRollouts        = "ConfirmRollouts"
	ActExpireCredential       = "ExpireCredential"
)

// SubscriptionWorkflowID is the deterministic id of a subscription's run.
func SubscriptionWorkflowID(subscriptionID string) string { return "subscription/" + subscriptionID }

// CredentialSyncWorkflowID is the deterministic id of one credential version's rollout.
func CredentialSyncWorkflowID(credentialID string, version int64) string {
	return "credential-sync/" + credentialID + "/" + itoa(int(version))
}

// CredentialExpiryWorkflowID is the run that expires (or, after a rotation's grace period,
// revokes) a credential at its time.
func CredentialExpiryWorkflowID(credentialID string) string {
	return "credential-expiry/" + credentialID
}

// Decision is the payload of a subscription decision signal.
type Decision struct {
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
	// Source says where the decision came from: rest, or temporal-cli when absent.
	Source string `json:"source,omitempty"`
}

// SubscriptionInput starts a SubscriptionWorkflow.
type SubscriptionInput struct {
	SubscriptionID   string
	ApprovalRequired bool
	ApprovalDeadline time.Duration
}

// TransitionInput asks to move a subscription from one of From to To.
type TransitionInput struct {
	SubscriptionID string
	From           []string
	To             string
	Decision       Decision
	Action         string // audit action, e.g. subscription.approve
}

// TransitionResult says whether the transition applied.
type TransitionResult struct {
	Applied bool
	Status  string // the status after the call
}

// IgnoredSignal records a decision that did not apply (a malformed payload or the wrong state).
type IgnoredSignal struct {
	SubscriptionID string
	Signal         string
	Status         string
	Problem        string
	Actor          string
}

// SubscriptionState is the answer of the subscription run's status query.
type SubscriptionState struct {
	Status           string    `json:"status"`
	ApprovalDeadline time.Time `json:"approval_deadline"`
	LastDecision     Decision  `json:"last_decision"`
	Ignored          int       `json:"ignored_signals"`
}

// CredentialSyncInput starts the rollout of one credential version.
type CredentialSyncInput struct {
	CredentialID string
	Version      int64
	Reason       string
}

// RolloutTarget is one cluster of a credential version's rollout.
type RolloutTarget struct {
	ClusterID   string    `json:"cluster_id"`
	ClusterName string    `json:"cluster_name"`
	Action      string    `json:"action"` // upsert or revoke
	CommandID   string    `json:"command_id"`
	Confirmed   bool      `json:"confirmed"`
	ConfirmedBy string    `json:"confirmed_by"`
	QueuedAt    time.Time `json:"queued_at"`
	LastMessage string    `json:"last_message"`
}

// CredentialSyncPlan is what a rollout must reach.
type CredentialSyncPlan struct {
	Superseded bool // a newer version exists: its rollout replaces this one
	Targets    []RolloutTarget
}

// CredentialAck is an agent's acknowledgement, passed on by the agent gateway.
type CredentialAck struct {
	CommandID string
	ClusterID string
	AgentID   string
	Success   bool
	Message   string
}

// ConfirmInput marks one cluster of a rollout confirmed.
type ConfirmInput struct {
	CredentialID string
	Version      int64
	ClusterID    string
	CommandID    string
	AgentID      string
}

// ConfirmRolloutsInput marks several clusters of a rollout confirmed in one step.
type ConfirmRolloutsInput struct {
	CredentialID string
	Version      int64
	Clusters     []ClusterConfirmation
}

// ClusterConfirmation is one cluster's acknowledged command and the agent that acknowledged it.
type ClusterConfirmation struct {
	ClusterID string
	CommandID string
	AgentID   string
}

// CredentialSyncState is the answer of the rollout's status query.
type CredentialSyncState struct {
	CredentialID string          `json:"credential_id"`
	Version      int64           `json:"version"`
	Targets      []RolloutTarget `json:"targets"`
	Done         bool            `json:"done"`
	Superseded   bool            `json:"superseded"`
}

// CredentialExpiryInput schedules the end of a credential.
type CredentialExpiryInput struct {
	CredentialID string
	At           time.Time
}
