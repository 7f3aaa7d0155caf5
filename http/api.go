package http

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/syncstate"
	"github.com/imprun/imprun-server/temporalclient"
)

// API holds what the /v1 handlers need.
type API struct {
	store    *store.Store
	auth     *Authenticator
	temporal *temporalclient.Holder
	log      *slog.Logger
	hooks    Hooks
	settings Settings
	// catalog is the use cases of the provider's catalog.
	catalog *catalog.Catalog
	// ownsTx holds "METHOD /path" of the routes that commit their own transactions (see
	// ownTransactions); every other mutating route runs in one transaction with its audit row.
	ownsTx map[string]bool
	// principals caches authenticated principals per token (see principalCache).
	principals *principalCache
	// revisions shares a revision's snapshot read between a cluster's agents (see revisionCache).
	revisions *revisionCache
}

// Settings are the configured defaults the handlers apply.
type Settings struct {
	RegistrationTokenTTL time.Duration
	PublishDeadline      time.Duration
	ApprovalDeadline     time.Duration
	TaskQueue            string
	// SyncLimits are the limits desired vs applied is judged with (the agent gateway's).
	SyncLimits syncstate.Limits
}

func (s Settings) withDefaults() Settings {
	if s.RegistrationTokenTTL <= 0 {
		s.RegistrationTokenTTL = 30 * time.Minute
	}
	if s.PublishDeadline <= 0 {
		s.PublishDeadline = 24 * time.Hour
	}
	if s.SyncLimits.StaleAfter <= 0 {
		s.SyncLimits = syncstate.Limits{Grace: 30 * time.Second, StaleAfter: 34 * time.Second, MaxRepairs: 3}
	}
	if s.TaskQueue == "" {
		s.TaskQueue = "imprun"
	}
	if s.ApprovalDeadline <= 0 {
		s.ApprovalDeadline = 7 * 24 * time.Hour
	}
	return s
}

// Hooks are the parts of the API that later modules plug in (agent authentication, workflow
// starters), so this package does not depend on them.
type Hooks struct {
	// Agents verifies agent JWTs for /v1/agent; nil leaves the group closed (401).
	Agents AgentVerifier
	// CatalogUsage tells whether a published revision uses a catalog row; nil: nothing is.
	CatalogUsage store.CatalogUsage
}

// Deps are the dependencies of the API.
type Deps struct {
	Store    *store.Store
	Auth     *Authenticator
	Temporal *temporalclient.Holder
	Logger   *slog.Logger
	Hooks    Hooks
	Settings Settings
}

// NewAPI builds the API.
func NewAPI(d Deps) *API {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return &API{store: d.Store, auth: d.Auth, temporal: d.Temporal, log: d.Logger, hooks: d.Hooks, settings: d.Settings.withDefaults(),
		catalog: catalog.New(d.Store, d.Hooks.CatalogUsage), principals: newPrincipalCache(), revisions: newRevisionCache()}
}

// Register adds every /v1 route to e.
func (a *API) Register(e *echo.Echo) {
	v1 := e.Group("/v1")

	me := v1.Group("/me", a.authenticate)
	me.GET("", a.getMe)

	op := v1.Group("/operator", a.authenticate, a.requirePlatformRole(models.PlatformOperator, models.PlatformAdmin), a.idempotent, a.audited)
	op.POST("/tenants", a.createTenant)
	op.GET("/tenants", a.listTenants)
	op.GET("/tenants/:id", a.getTenant)
	op.POST("/tenants/:id/suspend", a.suspendTenant)
	op.POST("/tenants/:id/activate", a.activateTenant)
	op.POST("/tenants/:id/owners", a.addTenantOwner)
	op.POST("/tenants/:id/domains", a.addTenantDomain)
	op.GET("/tenants/:id/domains", a.listTenantDomains)
	op.DELETE("/tenants/:id/domains/:domain_id", a.deleteTenantDomain)
	op.GET("/audit-logs", a.listAuditLogs, a.requirePlatformRole(models.PlatformAdmin))
	a.registerClusters(op)

	prov := v1.Group("/provider", a.authenticate, a.tenantScope(models.TenantProvider), a.idempotent, a.audited)
	a.registerMembers(prov)
	a.registerCatalog(prov)
	a.registerCertificates(prov)
	a.registerPublishes(prov)
	a.registerRollouts(prov)

	cust := v1.Group("/customer", a.authenticate, a.tenantScope(models.TenantCustomer), a.idempotent, a.audited)
	a.registerMembers(cust)

	public := v1.Group("/public")
	a.registerMarketplace(public, cust, prov)
	a.registerSubscriptions(prov, cust)

	agent := v1.Group("/agent", a.authenticateAgent, a.idempotent, a.audited)
	a.registerAgentREST(agent)
}

// authenticate verifies the bearer token and loads (or creates) the user; both are served from
// the principal cache for a token seen within principalTTL (see principalCache).
func (a *API) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, raw, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
			a.log.Info("authentication failed", "request_id", requestID(c), "reason", "no bearer token")
			return Unauthorized()
		}
		key := tokenKey(raw)
		e, ok, gen := a.principals.get(key)
		if ok {
			c.Set(ctxPrincipalKey, principalKey{key: key, gen: gen, members: e.members})
			c.Set(ctxPrincipal, &Principal{User: e.user, Subject: e.id.Subject, Email: e.user.Email, PlatformRoles: e.id.Roles})
			return next(c)
		}
		id, exp, err := a.auth.verify(c.Request().Context(), raw)
		if errors.Is(err, ErrIssuerUnavailable) {
			a.log.Warn("identity provider unavailable", "request_id", requestID(c), "err", err)
			return Unavailable("identity_provider_unavailable", "the identity provider cannot be reached; try again shortly")
		}
		if err != nil {
			a.log.Info("authentication failed", "request_id", requestID(c), "reason", err.Error())
			return Unauthorized()
		}
		u, err := a.store.UserFromLogin(c.Request().Context(), id.Issuer, id.Subject, id.Email, id.Name)
		if err != nil {
			return err
		}
		a.principals.put(key, gen, cachedPrincipal{id: id, user: u, expires: earliest(time.Now().Add(principalTTL), exp)})
		c.Set(ctxPrincipalKey, principalKey{key: key, gen: gen})
		c.Set(ctxPrincipal, &Principal{User: u, Subject: id.Subject, Email: u.Email, PlatformRoles: id.Roles})
		return next(c)
	}
}

// ctxPrincipalKey holds the principalKey of an authenticated request.
const ctxPrincipalKey = "imprun.principal_key"

// principalKey is where a request's principal sits in the cache, and the memberships the
// cache held for it (nil: not cached).
type principalKey struct {
	key     [32]byte
	gen     uint64
	members []store.TenantMembership
}

func earliest(a, b time.Time) time.Time {
	if !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func (a *API) requirePlatformRole(roles ...string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !principalOf(c).HasPlatformRole(roles...) {
				return Forbidden("this endpoint needs the platform role " + strings.Join(roles, " or "))
			}
			return next(c)
		}
	}
}

// tenantScope picks the tenant of the request among the caller's memberships in tenants of
// tenantType: the X-Tenant header (slug) when given, else the only one.
func (a *API) tenantScope(tenantType string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p := principalOf(c)
			pk, _ := c.Get(ctxPrincipalKey).(principalKey)
			all := pk.members
			if all == nil {
				var err error
				if all, err = a.store.MembershipsOf(c.Request().Context(), p.User.ID); err != nil {
					return err
				}
				a.principals.setMembers(pk.key, pk.gen, all)
			}
			var mine []store.TenantMembership
			for _, m := range all {
				if m.Type == tenantType {
					mine = append(mine, m)
				}
			}
			slug := c.Request().Header.Get("X-Tenant")
			var chosen *store.TenantMembership
			switch {
			case slug != "":
				for i := range mine {
					if mine[i].Slug == slug {
						chosen = &mine[i]
					}
				}
				if chosen == nil {
					// The same answer whether the tenant exists or not.
					return Forbidden("you are not a member of a " + tenantType + " tenant with slug " + slug)
				}
			case len(mine) == 1:
				chosen = &mine[0]
			case len(mine) == 0:
				return Forbidden("you are not a member of any " + tenantType + " tenant")
			default:
				return BadRequest("tenant_required", "you belong to several "+tenantType+" tenants: pick one with the X-Tenant header",
					FieldError{Field: "X-Tenant", Message: "required"})
			}
			if chosen.Status != models.TenantActive {
				return NewProblem(403, "tenant_suspended", "tenant "+chosen.Slug+" is "+chosen.Status)
			}
			c.Set(ctxTenant, &TenantScope{Tenant: chosen.Tenant, Role: chosen.Role})
			return next(c)
		}
	}
}

// RequireRole is route middleware: the caller's role in the request's tenant must be at least
// min (owner > admin > developer > viewer).
func RequireRole(min string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			t := tenantOf(c)
			if t == nil || models.RoleRank(t.Role) < models.RoleRank(min) {
				return Forbidden("this action needs the tenant role " + min + " or higher")
			}
			return next(c)
		}
	}
}

// Principal returns the authenticated person of a request (nil for agents and anonymous).
func PrincipalOf(c echo.Context) *Principal { return principalOf(c) }

// Tenant returns the tenant scope of a provider or customer request.
func Tenant(c echo.Context) *TenantScope { return tenantOf(c) }
