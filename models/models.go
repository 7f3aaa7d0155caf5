// Package models holds the GORM models and enums of imprun-server: the shared vocabulary of the
// store, the HTTP handlers, the agent gateway, the activities and the workflows. It depends on
// nothing of ours.
package models

import (
	"time"

	"github.com/google/uuid"
)

// Tenant types.
const (
	TenantProvider = "provider"
	TenantCustomer = "customer"
)

// Tenant statuses.
const (
	TenantActive    = "active"
	TenantSuspended = "suspended"
)

// Membership roles, strongest first.
const (
	RoleOwner     = "owner"
	RoleAdmin     = "admin"
	RoleDeveloper = "developer"
	RoleViewer    = "viewer"
)

// Platform roles, read from the OIDC token.
const (
	PlatformOperator = "operator"
	PlatformAdmin    = "admin"
)

// Tenant is a provider or customer organisation.
type Tenant struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// User is a person known from an OIDC subject; created on first request.
type User struct {
	ID          uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	Subject     string     `json:"-"`
	Issuer      string     `json:"-"`
	Email       string     `json:"email"`
	DisplayName string     `json:"display_name"`
	LastLoginAt *time.Time `json:"last_login_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// Membership links a user to a tenant with a role.
type Membership struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID  uuid.UUID `gorm:"type:uuid" json:"tenant_id"`
	UserID    uuid.UUID `gorm:"type:uuid" json:"user_id"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RoleRank orders membership roles: a higher rank may do everything a lower one may.
func RoleRank(role string) int {
	switch role {
	case RoleOwner:
		return 4
	case RoleAdmin:
		return 3
	case RoleDeveloper:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}

// PageKey orders tenants in lists.
func (t Tenant) PageKey() (time.Time, uuid.UUID) { return t.CreatedAt, t.ID }

// TenantDomain is a DNS domain a tenant owns: its publishes may serve the domain and every name
// under it. Operators grant domains; one domain (or any domain inside it) has one owner.
type TenantDomain struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	TenantID  uuid.UUID `gorm:"type:uuid" json:"tenant_id"`
	Domain    string    `json:"domain"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}
