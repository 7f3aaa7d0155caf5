package models

import (
	"time"

	"github.com/google/uuid"
)

// Actor types of audit entries.
const (
	ActorUser     = "user"
	ActorAgent    = "agent"
	ActorWorkflow = "workflow"
	ActorSystem   = "system"
)

// AuditLog is one immutable entry of the audit trail. Summary never holds a secret.
type AuditLog struct {
	ID           uuid.UUID   `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	CreatedAt    time.Time   `json:"created_at"`
	ActorType    string      `json:"actor_type"`
	ActorID      string      `json:"actor_id"`
	ActorEmail   string      `json:"actor_email"`
	ActorRoles   StringArray `gorm:"type:text[]" json:"actor_roles"`
	TenantID     *uuid.UUID  `gorm:"type:uuid" json:"tenant_id"`
	TenantSlug   string      `json:"tenant_slug"`
	Action       string      `json:"action"`
	ResourceType string      `json:"resource_type"`
	ResourceID   string      `json:"resource_id"`
	ResourceName string      `json:"resource_name"`
	RequestID    string      `json:"request_id"`
	Method       string      `json:"method"`
	Path         string      `json:"path"`
	StatusCode   int         `json:"status_code"`
	IPAddress    string      `json:"ip_address"`
	UserAgent    string      `json:"user_agent"`
	Summary      JSONMap     `gorm:"type:jsonb" json:"summary"`
}

// PageKey orders audit entries in lists.
func (a AuditLog) PageKey() (time.Time, uuid.UUID) { return a.CreatedAt, a.ID }
