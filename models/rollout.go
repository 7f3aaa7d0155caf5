package models

import (
	"time"

	"github.com/google/uuid"
)

// Rollout statuses, pause reasons and per-cluster states. Only RolloutWorkflow's activities
// write them.
const (
	RolloutProgressing = "progressing"
	RolloutPaused      = "paused"
	RolloutSucceeded   = "succeeded"
	RolloutAborting    = "aborting"
	RolloutAborted     = "aborted"
	RolloutSuperseded  = "superseded"

	PauseGate          = "gate"
	PauseFailureBudget = "failure_budget"
	PauseManual        = "manual"

	RolloutClusterPending    = "pending"
	RolloutClusterDeploying  = "deploying"
	RolloutClusterSoaking    = "soaking"
	RolloutClusterSucceeded  = "succeeded"
	RolloutClusterFailed     = "failed"
	RolloutClusterTimedOut   = "timed_out"
	RolloutClusterRolledBack = "rolled_back"

	GateAuto   = "auto"
	GateManual = "manual"
)

// RolloutActive says whether a rollout with this status still has a run in flight.
func RolloutActive(status string) bool {
	return status == RolloutProgressing || status == RolloutPaused || status == RolloutAborting
}

// RolloutWave is one resolved wave: its clusters in order, how many deploy at once, and whether
// a person must approve before it starts.
type RolloutWave struct {
	Clusters       []uuid.UUID `json:"clusters"`
	Percent        int         `json:"percent,omitempty"`
	MaxConcurrency int         `json:"max_concurrency"`
	Gate           string      `json:"gate"`
}

// RolloutStrategy is the accepted strategy with its waves resolved to clusters.
type RolloutStrategy struct {
	Waves                   []RolloutWave `json:"waves"`
	MaxFailures             int           `json:"max_failures"`
	MaxFailuresRequested    string        `json:"max_failures_requested"`
	MinSuccessTimeSeconds   int           `json:"min_success_time_seconds"`
	ProgressDeadlineSeconds int           `json:"progress_deadline_seconds"`
}

// RolloutSelector is how the target clusters were chosen.
type RolloutSelector struct {
	ClusterIDs []uuid.UUID       `json:"cluster_ids,omitempty"`
	Region     string            `json:"region,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// RolloutWaiting says what a rollout waits for: a gate approval, the end of a soak, a pause
// to be resumed; Until is when a soak ends.
type RolloutWaiting struct {
	For   string     `json:"for,omitempty"` // gate, soak, resume, deployments, rollbacks
	Wave  int        `json:"wave"`
	Until *time.Time `json:"until,omitempty"`
}

// Rollout deploys one product to many clusters in waves.
type Rollout struct {
	ID           uuid.UUID             `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID     uuid.UUID             `gorm:"type:uuid" json:"tenant_id"`
	ProductID    uuid.UUID             `gorm:"type:uuid" json:"product_id"`
	Spec         JSONMap               `gorm:"type:jsonb" json:"spec"`
	Strategy     JSON[RolloutStrategy] `gorm:"type:jsonb" json:"strategy"`
	Selector     JSON[RolloutSelector] `gorm:"type:jsonb" json:"selector"`
	Status       string                `json:"status"`
	PauseReason  string                `json:"pause_reason"`
	StatusReason string                `json:"status_reason"`
	CurrentWave  int                   `json:"current_wave"`
	MaxFailures  int                   `json:"max_failures"`
	Failures     int                   `json:"failures"`
	BudgetLeft   int                   `json:"failure_budget_left"`
	Waiting      JSON[RolloutWaiting]  `gorm:"type:jsonb" json:"waiting"`
	WorkflowID   string                `json:"workflow_id"`
	SupersededBy *uuid.UUID            `gorm:"type:uuid" json:"superseded_by"`
	CreatedBy    string                `json:"created_by"`
	CreatedAt    time.Time             `json:"created_at"`
	UpdatedAt    time.Time             `json:"updated_at"`
	FinishedAt   *time.Time            `json:"finished_at"`
}

// TableName maps the model.
func (Rollout) TableName() string { return "rollouts" }

// PageKey orders rollouts in lists.
func (r Rollout) PageKey() (time.Time, uuid.UUID) { return r.CreatedAt, r.ID }

// RolloutCluster is one target cluster of a rollout and how far it got.
type RolloutCluster struct {
	RolloutID        uuid.UUID  `gorm:"type:uuid;primaryKey" json:"-"`
	ClusterID        uuid.UUID  `gorm:"type:uuid;primaryKey" json:"cluster_id"`
	Wave             int        `json:"wave"`
	Position         int        `json:"-"`
	State            string     `json:"state"`
	PublishID        *uuid.UUID `gorm:"type:uuid" json:"publish_id"`
	Revision         int        `json:"revision"`
	PreviousRevision int        `json:"previous_revision"`
	Message          string     `json:"message"`
	Attempts         int        `json:"attempts"`
	StartedAt        *time.Time `json:"started_at"`
	DeadlineAt       *time.Time `json:"deadline_at"`
	FinishedAt       *time.Time `json:"finished_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

// TableName maps the model.
func (RolloutCluster) TableName() string { return "rollout_clusters" }
