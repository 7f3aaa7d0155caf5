package http

import (
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
)

// Principal is the authenticated person behind a request.
type Principal struct {
	User          models.User
	Subject       string
	Email         string
	PlatformRoles []string
}

// HasPlatformRole reports whether the principal holds one of roles.
func (p *Principal) HasPlatformRole(roles ...string) bool {
	for _, have := range p.PlatformRoles {
		for _, want := range roles {
			if have == want {
				return true
			}
		}
	}
	return false
}

// TenantScope is the tenant a request acts in, with the caller's role in it.
type TenantScope struct {
	models.Tenant
	Role string
}

const (
	ctxPrincipal = "imprun.principal"
	ctxTenant    = "imprun.tenant"
)

func principalOf(c echo.Context) *Principal {
	p, _ := c.Get(ctxPrincipal).(*Principal)
	return p
}

func tenantOf(c echo.Context) *TenantScope {
	t, _ := c.Get(ctxTenant).(*TenantScope)
	return t
}
