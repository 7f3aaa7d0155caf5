package models

import (
	"time"

	"github.com/google/uuid"
)

// Subscription statuses. Only SubscriptionWorkflow's activities write them.
const (
	SubscriptionPending   = "pending"
	SubscriptionActive    = "active"
	SubscriptionRejected  = "rejected"
	SubscriptionExpired   = "expired"
	SubscriptionSuspended = "suspended"
	SubscriptionCancelled = "cancelled"
)

// Client app statuses.
const (
	AppActive   = "active"
	AppInactive = "inactive"
)

// Credential types and statuses.
const (
	CredentialAPIKey      = "api_key"
	CredentialOAuthClient = "oauth_client"

	CredentialActive  = "active"
	CredentialRevoked = "revoked"
	CredentialExpired = "expired"
)

// PublishInvitation lets a customer tenant see and subscribe to a private publish.
type PublishInvitation struct {
	PublishID        uuid.UUID `gorm:"type:uuid;primaryKey" json:"publish_id"`
	CustomerTenantID uuid.UUID `gorm:"type:uuid;primaryKey" json:"customer_tenant_id"`
	InvitedBy        string    `json:"invited_by"`
	CreatedAt        time.Time `json:"created_at"`
}

// ClientApp is a customer's application that holds credentials and subscriptions.
type ClientApp struct {
	ID             uuid.UUID   `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID       uuid.UUID   `gorm:"type:uuid" json:"-"`
	Name           string      `json:"name"`
	Description    string      `json:"description"`
	CallbackURLs   StringArray `gorm:"column:callback_urls;type:text[]" json:"callback_urls"`
	AllowedOrigins StringArray `gorm:"type:text[]" json:"allowed_origins"`
	Status         string      `json:"status"`
	CreatedAt      time.Time   `json:"created_at"`
	UpdatedAt      time.Time   `json:"updated_at"`
}

// TableName maps the model.
func (ClientApp) TableName() string { return "client_apps" }

// PageKey orders apps in lists.
func (a ClientApp) PageKey() (time.Time, uuid.UUID) { return a.CreatedAt, a.ID }

// Subscription is a client app's subscription to a product publish.
type Subscription struct {
	ID               uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	CustomerTenantID uuid.UUID  `gorm:"type:uuid" json:"customer_tenant_id"`
	ProviderTenantID uuid.UUID  `gorm:"type:uuid" json:"provider_tenant_id"`
	ProductPublishID uuid.UUID  `gorm:"type:uuid" json:"product_publish_id"`
	ClientAppID      uuid.UUID  `gorm:"type:uuid" json:"client_app_id"`
	PlanID           *uuid.UUID `gorm:"type:uuid" json:"plan_id"`
	Status           string     `json:"status"`
	ApprovalRequired bool       `json:"approval_required"`
	ApprovalDeadline *time.Time `json:"approval_deadline"`
	DecidedBy        string     `json:"decided_by"`
	DecidedAt        *time.Time `json:"decided_at"`
	Reason           string     `json:"reason"`
	StartedAt        *time.Time `json:"started_at"`
	EndedAt          *time.Time `json:"ended_at"`
	CreatedBy        string     `json:"created_by"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

// PageKey orders subscriptions in lists.
func (s Subscription) PageKey() (time.Time, uuid.UUID) { return s.CreatedAt, s.ID }

// Credential is an API key or OAuth client of a client app. The secret is never stored:
// SecretHash is the hex SHA-256 of the part after the first "." of an API key
// (`imp_<prefix>.<secret>`), or of the OAuth client secret; agents hash what they are shown
// the same way.
type Credential struct {
	ID          uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID    uuid.UUID  `gorm:"type:uuid" json:"-"`
	ClientAppID uuid.UUID  `gorm:"type:uuid" json:"client_app_id"`
	Type        string     `json:"type"`
	KeyPrefix   string     `json:"key_prefix"`
	SecretHash  string     `json:"-"`
	Label       string     `json:"label"`
	Status      string     `json:"status"`
	Version     int64      `json:"version"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokeAt    *time.Time `json:"revoke_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	RotatedFrom *uuid.UUID `gorm:"type:uuid" json:"rotated_from"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// PageKey orders credentials in lists.
func (c Credential) PageKey() (time.Time, uuid.UUID) { return c.CreatedAt, c.ID }

// Rollout actions and statuses.
const (
	RolloutUpsert    = "upsert"
	RolloutRevoke    = "revoke"
	RolloutPending   = "pending"
	RolloutConfirmed = "confirmed"
)

// CredentialRollout is the state of a credential's latest version on one cluster.
type CredentialRollout struct {
	CredentialID uuid.UUID  `gorm:"type:uuid;primaryKey" json:"credential_id"`
	ClusterID    uuid.UUID  `gorm:"type:uuid;primaryKey" json:"cluster_id"`
	Version      int64      `json:"version"`
	Action       string     `json:"action"`
	CommandID    *uuid.UUID `gorm:"type:uuid" json:"command_id"`
	Status       string     `json:"status"`
	QueuedAt     time.Time  `json:"queued_at"`
	ConfirmedAt  *time.Time `json:"confirmed_at"`
	ConfirmedBy  *uuid.UUID `gorm:"type:uuid" json:"confirmed_by"`
}
