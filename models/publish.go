package models

import (
	"time"

	"github.com/google/uuid"
)

// Publish statuses (upper case, as in the seed). Only workflow activities write them.
const (
	PublishDraft       = "DRAFT"
	PublishDeploying   = "DEPLOYING"
	PublishPublished   = "PUBLISHED"
	PublishFailed      = "FAILED"
	PublishWithdrawing = "WITHDRAWING"
	PublishWithdrawn   = "WITHDRAWN"
)

// Publish environments, auth modes and visibilities.
const (
	EnvDev   = "dev"
	EnvStage = "stage"
	EnvProd  = "prod"

	AuthNone   = "none"
	AuthAPIKey = "api-key"
	AuthOAuth2 = "oauth2"

	VisibilityPublic  = "public"
	VisibilityPrivate = "private"
)

// ProductPublish deploys a product, through a gateway template, to a cluster.
type ProductPublish struct {
	ID               uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID         uuid.UUID `gorm:"type:uuid" json:"tenant_id"`
	ProductID        uuid.UUID `gorm:"type:uuid" json:"product_id"`
	GatewayID        uuid.UUID `gorm:"type:uuid" json:"gateway_id"`
	ClusterID        uuid.UUID `gorm:"type:uuid" json:"cluster_id"`
	Environment      string    `json:"environment"`
	Hostname         string    `json:"hostname"`
	AuthMode         string    `json:"auth_mode"`
	AuthConfig       JSONMap   `gorm:"type:jsonb" json:"auth_config"`
	Visibility       string    `json:"visibility"`
	ApprovalRequired bool      `json:"approval_required"`
	DeadlineSeconds  *int      `json:"deadline_seconds"`
	APIServiceIDs    UUIDArray `gorm:"column:api_service_ids;type:uuid[]" json:"api_services"`
	Status           string    `json:"status"`
	StatusReason     string    `json:"status_reason"`
	CurrentRevision  int       `json:"current_revision"`
	WorkflowID       *string   `json:"-"`
	// ClaimedAt is when the run in WorkflowID claimed the publish. The model writes it only
	// when it inserts a publish created claimed; a later claim is the store's own UPDATE.
	ClaimedAt      *time.Time `gorm:"<-:create" json:"-"`
	PublishedAt    *time.Time `json:"published_at"`
	PublishedBy    string     `json:"published_by"`
	WithdrawnAt    *time.Time `json:"withdrawn_at"`
	WithdrawnBy    string     `json:"withdrawn_by"`
	WithdrawReason string     `json:"withdraw_reason"`
	CreatedBy      string     `json:"created_by"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// TableName maps the model.
func (ProductPublish) TableName() string { return "product_publishes" }

// PageKey orders publishes in lists.
func (p ProductPublish) PageKey() (time.Time, uuid.UUID) { return p.CreatedAt, p.ID }

// PublishRevision is an immutable snapshot of what a publish action deployed.
type PublishRevision struct {
	PublishID  uuid.UUID `gorm:"type:uuid;primaryKey" json:"publish_id"`
	Revision   int       `gorm:"primaryKey" json:"revision"`
	Snapshot   []byte    `json:"-"`
	Checksum   string    `json:"checksum"`
	RollbackOf *int      `json:"rollback_of"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
}

// Publish event types (the timeline).
const (
	PublishEventCreated           = "created"
	PublishEventUpdated           = "updated"
	PublishEventPublishRequested  = "publish_requested"
	PublishEventRollbackRequested = "rollback_requested"
	PublishEventWithdrawRequested = "withdraw_requested"
	PublishEventRevisionFrozen    = "revision_frozen"
	PublishEventCommandQueued     = "command_queued"
	PublishEventCommandDelivered  = "command_delivered"
	PublishEventResult            = "agent_result"
	PublishEventPublished         = "published"
	PublishEventFailed            = "failed"
	PublishEventDeployCancelled   = "deploy_cancelled"
	PublishEventWithdrawn         = "withdrawn"
	PublishEventDegraded          = "degraded"
	// PublishEventRepair: an agent's gateway drifted from the published revision and the
	// control plane sent it again (drift policy repair).
	PublishEventRepair = "drift_repair"
	// PublishEventDrift: an agent's gateway drifted and the cluster's policy only reports it.
	PublishEventDrift = "drift_detected"
	// PublishEventOrphanReleased: the run that held the publish never started or ended without
	// its outcome; the reconciler released the publish.
	PublishEventOrphanReleased = "orphan_released"
)

// PublishEvent is one entry of a publish's timeline.
type PublishEvent struct {
	ID        uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	PublishID uuid.UUID  `gorm:"type:uuid" json:"publish_id"`
	Type      string     `json:"type"`
	Revision  int        `json:"revision"`
	Actor     string     `json:"actor"`
	AgentID   *uuid.UUID `gorm:"type:uuid" json:"agent_id"`
	Message   string     `json:"message"`
	Metadata  JSONMap    `gorm:"type:jsonb" json:"metadata"`
	DedupeKey *string    `json:"-"`
	CreatedAt time.Time  `json:"created_at"`
}
