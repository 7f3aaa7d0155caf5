package http

import (
	"context"
	"errors"
	nethttp "net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

type meResponse struct {
	User          models.User              `json:"user"`
	PlatformRoles []string                 `json:"platform_roles"`
	Tenants       []store.TenantMembership `json:"tenants"`
}

func (a *API) getMe(c echo.Context) error {
	p := principalOf(c)
	ts, err := a.store.MembershipsOf(c.Request().Context(), p.User.ID)
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []store.TenantMembership{}
	}
	roles := p.PlatformRoles
	if roles == nil {
		roles = []string{}
	}
	return c.JSON(nethttp.StatusOK, meResponse{User: p.User, PlatformRoles: roles, Tenants: ts})
}

type createTenantRequest struct {
	Slug       string `json:"slug"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	OwnerEmail string `json:"owner_email"`
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && len(s) <= 320
}

func (a *API) createTenant(c echo.Context) error {
	var req createTenantRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	v.check(k8sNameRe.MatchString(req.Slug), "slug", "lower-case letters, digits and dashes, 1-63 characters, starting and ending with a letter or digit")
	v.check(strings.TrimSpace(req.Name) != "" && len(req.Name) <= 200, "name", "required, at most 200 characters")
	v.check(req.Type == models.TenantProvider || req.Type == models.TenantCustomer, "type", "must be provider or customer")
	v.check(req.OwnerEmail == "" || validEmail(req.OwnerEmail), "owner_email", "must be an e-mail address")
	if err := v.err(); err != nil {
		return err
	}
	t := models.Tenant{Slug: req.Slug, Name: strings.TrimSpace(req.Name), Type: req.Type, Status: models.TenantActive}
	var owner *store.Member
	err := a.store.InTx(c.Request().Context(), func(ctx context.Context) error {
		if err := a.store.CreateTenant(ctx, &t); err != nil {
			return err
		}
		if req.OwnerEmail != "" {
			m, err := a.store.AddMember(ctx, t.ID, req.OwnerEmail, models.RoleOwner)
			if err != nil {
				return err
			}
			owner = &m
		}
		return nil
	})
	a.principals.flush() // committed: this replica's next request sees the membership
	if errors.Is(err, store.ErrConflict) {
		return Conflict("slug_taken", "a tenant with this slug exists", "")
	}
	if err != nil {
		return err
	}
	summary := map[string]any{"slug": t.Slug, "type": t.Type}
	if owner != nil {
		summary["owner_email"] = owner.Email
	}
	Audit(c, AuditEntry{Action: "tenant.create", ResourceType: "tenant", ResourceID: t.ID.String(), ResourceName: t.Slug, Summary: summary})
	return c.JSON(nethttp.StatusCreated, t)
}

func (a *API) listTenants(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	typ, err := queryEnum(c, "type", models.TenantProvider, models.TenantCustomer)
	if err != nil {
		return err
	}
	st, err := queryEnum(c, "status", models.TenantActive, models.TenantSuspended)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListTenants(c.Request().Context(), store.TenantFilter{Type: typ, Status: st}, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getTenant(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	t, err := a.store.GetTenant(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("tenant")
	}
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, t)
}

func (a *API) suspendTenant(c echo.Context) error {
	return a.setTenantStatus(c, models.TenantSuspended)
}

func (a *API) activateTenant(c echo.Context) error { return a.setTenantStatus(c, models.TenantActive) }

func (a *API) setTenantStatus(c echo.Context, status string) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	before, err := a.store.GetTenant(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("tenant")
	}
	if err != nil {
		return err
	}
	t, err := a.store.SetTenantStatus(c.Request().Context(), id, status)
	a.principals.flush()
	if err != nil {
		return err
	}
	t.Status = status
	action := map[string]string{models.TenantSuspended: "tenant.suspend", models.TenantActive: "tenant.activate"}[status]
	Audit(c, AuditEntry{Action: action, ResourceType: "tenant", ResourceID: t.ID.String(), ResourceName: t.Slug,
		Summary: map[string]any{"status": map[string]string{"before": before.Status, "after": status}}})
	return c.JSON(nethttp.StatusOK, t)
}

type memberRequest struct {
	Email string `json:"email"`
	Role  string `json:"role"`
}

func (a *API) addTenantOwner(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var req struct {
		Email string `json:"email"`
	}
	if err := bindChecked(c, &req, func(v *validator) { v.email(req.Email) }); err != nil {
		return err
	}
	t, err := a.store.GetTenant(c.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("tenant")
	}
	if err != nil {
		return err
	}
	m, err := a.store.AddMember(c.Request().Context(), t.ID, req.Email, models.RoleOwner)
	a.principals.flush()
	if errors.Is(err, store.ErrConflict) {
		return Conflict("already_member", req.Email+" is already a member of "+t.Slug, "")
	}
	if err != nil {
		return err
	}
	c.Set(ctxTenant, &TenantScope{Tenant: t})
	Audit(c, AuditEntry{Action: "member.add", ResourceType: "membership", ResourceID: m.ID.String(), ResourceName: m.Email,
		Summary: map[string]any{"role": m.Role, "tenant": t.Slug}})
	return c.JSON(nethttp.StatusCreated, m)
}

// registerMembers adds the member management of a tenant group.
func (a *API) registerMembers(g *echo.Group) {
	members := collection{list: a.listMembers, create: a.addMember, get: a.getMember, update: a.updateMember, delete: a.removeMember}
	members.register(g, "/members", RequireRole(models.RoleViewer), RequireRole(models.RoleAdmin))
}

var validRoles = []string{models.RoleOwner, models.RoleAdmin, models.RoleDeveloper, models.RoleViewer}

func validRole(r string) bool {
	for _, v := range validRoles {
		if v == r {
			return true
		}
	}
	return false
}

// bindChecked binds a member body and runs check on its fields: one validation_failed names
// every field that failed.
func bindChecked(c echo.Context, req any, check func(*validator)) error {
	if err := bindJSON(c, req); err != nil {
		return err
	}
	var v validator
	check(&v)
	return v.err()
}

func (v *validator) email(s string) { v.check(validEmail(s), "email", "must be an e-mail address") }

func (v *validator) role(r string) {
	v.check(validRole(r), "role", "must be one of owner, admin, developer, viewer")
}

func (a *API) listMembers(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListMembers(c.Request().Context(), tenantOf(c).ID, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getMember(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	m, err := a.store.GetMember(c.Request().Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("member")
	}
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, m)
}

func (a *API) addMember(c echo.Context) error {
	var req memberRequest
	if err := bindChecked(c, &req, func(v *validator) { v.email(req.Email); v.role(req.Role) }); err != nil {
		return err
	}
	t := tenantOf(c)
	if req.Role == models.RoleOwner && t.Role != models.RoleOwner {
		return Forbidden("only an owner can add an owner")
	}
	m, err := a.store.AddMember(c.Request().Context(), t.ID, req.Email, req.Role)
	a.principals.flush()
	if errors.Is(err, store.ErrConflict) {
		return Conflict("already_member", req.Email+" is already a member", "")
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "member.add", ResourceType: "membership", ResourceID: m.ID.String(), ResourceName: m.Email,
		Summary: map[string]any{"role": m.Role}})
	return c.JSON(nethttp.StatusCreated, m)
}

func (a *API) updateMember(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var req struct {
		Role string `json:"role"`
	}
	if err := bindChecked(c, &req, func(v *validator) { v.role(req.Role) }); err != nil {
		return err
	}
	t := tenantOf(c)
	ctx := c.Request().Context()
	before, err := a.store.GetMember(ctx, t.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("member")
	}
	if err != nil {
		return err
	}
	if (req.Role == models.RoleOwner || before.Role == models.RoleOwner) && t.Role != models.RoleOwner {
		return Forbidden("only an owner can grant or take the owner role")
	}
	m, err := a.store.UpdateMemberRole(ctx, t.ID, id, req.Role)
	a.principals.flush()
	if errors.Is(err, store.ErrLastOwner) {
		return Conflict("last_owner", "a tenant keeps at least one owner", before.Role)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "member.update", ResourceType: "membership", ResourceID: m.ID.String(), ResourceName: m.Email,
		Summary: map[string]any{"role": map[string]string{"before": before.Role, "after": m.Role}}})
	return c.JSON(nethttp.StatusOK, m)
}

func (a *API) removeMember(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	t := tenantOf(c)
	ctx := c.Request().Context()
	before, err := a.store.GetMember(ctx, t.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return NotFound("member")
	}
	if err != nil {
		return err
	}
	if before.UserID == principalOf(c).User.ID {
		return Conflict("cannot_remove_self", "you cannot remove yourself; ask another admin or owner", "")
	}
	if before.Role == models.RoleOwner && t.Role != models.RoleOwner {
		return Forbidden("only an owner can remove an owner")
	}
	m, err := a.store.RemoveMember(ctx, t.ID, id)
	a.principals.flush()
	if errors.Is(err, store.ErrLastOwner) {
		return Conflict("last_owner", "a tenant keeps at least one owner", before.Role)
	}
	if err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "member.remove", ResourceType: "membership", ResourceID: m.ID.String(), ResourceName: m.Email,
		Summary: map[string]any{"role": m.Role}})
	return c.NoContent(nethttp.StatusNoContent)
}

func (a *API) listAuditLogs(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	f := store.AuditFilter{ActorID: c.QueryParam("actor_id"), Action: c.QueryParam("action"),
		ResourceType: c.QueryParam("resource_type"), ResourceID: c.QueryParam("resource_id")}
	if f.TenantID, err = queryUUID(c, "tenant_id"); err != nil {
		return err
	}
	for _, tp := range []struct {
		name string
		dst  **time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if s := c.QueryParam(tp.name); s != "" {
			t, perr := time.Parse(time.RFC3339, s)
			if perr != nil {
				return BadRequest("invalid_query", "a time is malformed", FieldError{Field: tp.name, Message: "must be an RFC 3339 time"})
			}
			*tp.dst = &t
		}
	}
	rows, next, err := a.store.ListAudit(c.Request().Context(), f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}
