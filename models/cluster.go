package models

import (
	"database/sql/driver"
	"time"

	"github.com/google/uuid"
)

// Cluster statuses.
const (
	ClusterPending     = "pending"
	ClusterActive      = "active"
	ClusterInactive    = "inactive"
	ClusterMaintenance = "maintenance"
)

// Agent statuses.
const (
	AgentPending      = "pending"
	AgentConnected    = "connected"
	AgentDisconnected = "disconnected"
	AgentRevoked      = "revoked"
)

// Agent event types.
const (
	EventRegistered    = "registered"
	EventConnected     = "connected"
	EventDisconnected  = "disconnected"
	EventTokenIssued   = "token_issued"
	EventTokenReplaced = "token_replaced"
	EventTokenRevoked  = "token_revoked"
	EventError         = "error"
	// EventProtocolViolation: the agent sent what the protocol does not allow (an answer to a
	// command of another cluster, say). A security event.
	EventProtocolViolation = "protocol_violation"
)

// EgressAllow lists address ranges and host names (exact, or ".suffix") a cluster allows as
// backend endpoints although the default egress policy refuses them (loopback for a sidecar,
// say).
type EgressAllow struct {
	CIDRs        []string `json:"cidrs"`
	NameSuffixes []string `json:"name_suffixes"`
}

// Capabilities say what a cluster can run.
type Capabilities struct {
	GatewayClasses []GatewayClassCapability `json:"gateway_classes"`
}

// GatewayClassCapability is one gateway class a cluster supports, with versions.
type GatewayClassCapability struct {
	Name     string   `json:"name"`
	Versions []string `json:"versions,omitempty"`
}

// Supports reports whether the cluster lists class.
func (c Capabilities) Supports(class string) bool {
	for _, g := range c.GatewayClasses {
		if g.Name == class {
			return true
		}
	}
	return false
}

// Cluster is a Kubernetes cluster that runs gateways.
type Cluster struct {
	ID            uuid.UUID          `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	Name          string             `json:"name"`
	Description   string             `json:"description"`
	Region        string             `json:"region"`
	CloudProvider string             `json:"cloud_provider"`
	Capabilities  JSON[Capabilities] `gorm:"type:jsonb" json:"capabilities"`
	// EgressAllow is what the cluster's operator allows as backend endpoints beyond the
	// default egress policy (package egress).
	EgressAllow JSON[EgressAllow] `gorm:"type:jsonb" json:"egress_allow"`
	Metadata    JSONMap           `gorm:"type:jsonb" json:"metadata"`
	Status      string            `json:"status"`
	// DriftPolicy is what the control plane does about an agent whose gateway serves something
	// else than it should: DriftOff, DriftReport or DriftRepair (the default).
	DriftPolicy string    `json:"drift_policy"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// PageKey orders clusters in lists.
func (c Cluster) PageKey() (time.Time, uuid.UUID) { return c.CreatedAt, c.ID }

// Agent is one agent process in a cluster.
type Agent struct {
	ID                uuid.UUID               `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	ClusterID         uuid.UUID               `gorm:"type:uuid" json:"cluster_id"`
	Name              string                  `json:"name"`
	Status            string                  `json:"status"`
	Version           string                  `json:"version"`
	Hostname          string                  `json:"hostname"`
	IPAddress         string                  `json:"ip_address"`
	LastHeartbeatAt   *time.Time              `json:"last_heartbeat_at"`
	LastConnectedAt   *time.Time              `json:"last_connected_at"`
	TokenGeneration   int                     `json:"-"`
	RefreshSecretHash *string                 `json:"-"`
	SessionID         *uuid.UUID              `gorm:"type:uuid" json:"-"`
	ReplicaID         *uuid.UUID              `gorm:"type:uuid" json:"-"` // the api replica holding its stream
	RevokedAt         *time.Time              `json:"revoked_at"`
	RegisteredWith    *uuid.UUID              `gorm:"type:uuid" json:"registered_with"`
	Applied           JSON[[]AppliedRevision] `gorm:"type:jsonb" json:"applied"`
	// CredentialChecksum is the checksum of the credential set the agent last reported.
	CredentialChecksum string    `json:"credential_checksum"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`
}

// PageKey orders agents in lists.
func (a Agent) PageKey() (time.Time, uuid.UUID) { return a.CreatedAt, a.ID }

// AppliedRevision is a publish revision an agent reports as applied.
type AppliedRevision struct {
	PublishID string `json:"publish_id"`
	Revision  int    `json:"revision"`
	Checksum  string `json:"checksum"`
	// Drift says why the gateway does not serve exactly this revision; empty when it does.
	Drift string `json:"drift,omitempty"`
}

// Drift policies of a cluster.
const (
	DriftOff    = "off"
	DriftReport = "report"
	DriftRepair = "repair"
)

// RegistrationToken lets a new agent join a cluster. Only its hash is stored.
type RegistrationToken struct {
	ID          uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	ClusterID   uuid.UUID  `gorm:"type:uuid" json:"cluster_id"`
	TokenHash   string     `json:"-"`
	Prefix      string     `json:"prefix"`
	Description string     `json:"description"`
	MaxUses     int        `json:"max_uses"`
	Uses        int        `json:"uses"`
	ExpiresAt   time.Time  `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
}

// PageKey orders tokens in lists.
func (r RegistrationToken) PageKey() (time.Time, uuid.UUID) { return r.CreatedAt, r.ID }

// State says whether the token can still be used.
func (r RegistrationToken) State(now time.Time) string {
	switch {
	case r.RevokedAt != nil:
		return "revoked"
	case r.Uses >= r.MaxUses:
		return "used"
	case !now.Before(r.ExpiresAt):
		return "expired"
	}
	return "active"
}

// AgentEvent is one entry of an agent's history.
type AgentEvent struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	AgentID   uuid.UUID `gorm:"type:uuid" json:"agent_id"`
	ClusterID uuid.UUID `gorm:"type:uuid" json:"cluster_id"`
	Type      string    `json:"type"`
	Message   string    `json:"message"`
	Metadata  JSONMap   `gorm:"type:jsonb" json:"metadata"`
	IPAddress string    `json:"ip_address"`
	CreatedAt time.Time `json:"created_at"`
}

// PageKey orders events in lists.
func (e AgentEvent) PageKey() (time.Time, uuid.UUID) { return e.CreatedAt, e.ID }

// Command kinds of the agent outbox.
const (
	CommandDeploy           = "deploy"
	CommandCredentialUpsert = "credential_upsert"
	CommandCredentialRevoke = "credential_revoke"
	CommandReplaceToken     = "replace_token"
	CommandClose            = "close"
)

// Command priorities: lower goes first, so a reconnecting agent gets revocations before
// anything else.
const (
	PriorityRevocation = 0
	PriorityToken      = 1
	// PriorityRepair: the desired state sent again to an agent that drifted from it, before
	// anything new.
	PriorityRepair = 2
	PriorityNormal = 5
)

// AgentCommand is one command in the durable outbox. Payload holds ids and hashes only.
type AgentCommand struct {
	ID           uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	ClusterID    uuid.UUID  `gorm:"type:uuid" json:"cluster_id"`
	AgentID      *uuid.UUID `gorm:"type:uuid" json:"agent_id"`
	Kind         string     `json:"kind"`
	Priority     int        `json:"priority"`
	DedupeKey    string     `json:"dedupe_key"`
	SupersedeKey string     `json:"supersede_key"`
	Payload      JSONMap    `gorm:"type:jsonb" json:"payload"`
	// TraceContext is the W3C trace context of the span that queued the command (empty when
	// tracing is off); the gateway sends it with the command.
	TraceContext TraceContext `gorm:"type:jsonb" json:"trace_context"`
	CreatedAt    time.Time    `json:"created_at"`
	SupersededAt *time.Time   `json:"superseded_at"`
}

// TraceContext is a W3C trace context carrier ("traceparent", "tracestate") stored as a JSONB
// object; nil is stored as {}.
type TraceContext map[string]string

// Value implements driver.Valuer.
func (t TraceContext) Value() (driver.Value, error) { return Labels(t).Value() }

// Scan implements sql.Scanner.
func (t *TraceContext) Scan(src any) error { return scanJSON(src, (*map[string]string)(t)) }

// Delivery statuses.
const (
	DeliverySent  = "sent"
	DeliveryAcked = "acked"
)

// AgentCommandDelivery is the delivery state of one command to one agent.
type AgentCommandDelivery struct {
	CommandID    uuid.UUID  `gorm:"type:uuid;primaryKey" json:"command_id"`
	AgentID      uuid.UUID  `gorm:"type:uuid;primaryKey" json:"agent_id"`
	Status       string     `json:"status"`
	SentAt       *time.Time `json:"sent_at"`
	AckedAt      *time.Time `json:"acked_at"`
	ResultStatus string     `json:"result_status"`
	Result       JSONMap    `gorm:"type:jsonb" json:"result"`
	PassedOnAt   *time.Time `json:"passed_on_at"`
}
