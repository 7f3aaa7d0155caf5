package http_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/devissuer"
	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

// Personas used across the identity tests.
var (
	opsP      = apitest.Persona{Email: "ops@example.com", Roles: []string{models.PlatformOperator}}
	adminP    = apitest.Persona{Email: "root@example.com", Roles: []string{models.PlatformAdmin}}
	nobodyP   = apitest.Persona{Email: "nobody@example.com"}
	ownerP    = apitest.Persona{Email: "owner@acme.test"}
	tadminP   = apitest.Persona{Email: "admin@acme.test"}
	devP      = apitest.Persona{Email: "dev@acme.test"}
	viewerP   = apitest.Persona{Email: "viewer@acme.test"}
	custOwner = apitest.Persona{Email: "owner@globex.test"}
)

// world is a provider tenant "acme" with one member of every role and a customer tenant
// "globex" with an owner, made through the operator and member APIs.
type world struct {
	env          *apitest.Env
	acme, globex models.Tenant
	members      map[string]string // email -> membership id
}

func newWorld(t *testing.T) *world {
	t.Helper()
	env := apitest.New(t, apitest.Options{})
	w := &world{env: env, members: map[string]string{}}
	ops := env.As(opsP)
	r := ops.Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	r.JSON(&w.acme)
	r = ops.Post("/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custOwner.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	r.JSON(&w.globex)
	owner := env.As(ownerP)
	for email, role := range map[string]string{tadminP.Email: "admin", devP.Email: "developer", viewerP.Email: "viewer"} {
		r := owner.Post("/v1/provider/members", map[string]any{"email": email, "role": role})
		require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
		w.members[email] = r.Map()["id"].(string)
	}
	return w
}

func problemWithoutInstance(r *apitest.Response) httpapi.Problem {
	p := r.Problem()
	p.Instance = ""
	return p
}

// Every authentication failure gets the same 401 body; the reason is only in the log.
func TestAuthenticationFailuresLookTheSame(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{})

	otherKey, err := devissuer.NewKey()
	require.NoError(t, err)
	other, err := devissuer.Start("127.0.0.1:0", otherKey)
	require.NoError(t, err)
	defer other.Close()
	foreign, err := other.Token(apitest.Persona{Email: "x@example.com", Audience: apitest.Audience})
	require.NoError(t, err)
	// Signed by a key the issuer does not publish, but claiming to be the issuer.
	forged, err := devissuer.Token(otherKey, env.Issuer.URL(), apitest.Persona{Email: "x@example.com", Audience: apitest.Audience})
	require.NoError(t, err)
	expired := env.Token(apitest.Persona{Email: "x@example.com", TTL: -time.Minute})
	wrongAud := env.Token(apitest.Persona{Email: "x@example.com", Audience: "someone-else"})
	good := env.Token(apitest.Persona{Email: "x@example.com"})
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "=") + "A." + parts[2]

	cases := map[string]*apitest.Client{
		"no token":       env.Anonymous(),
		"garbage":        env.WithToken("not-a-jwt"),
		"other issuer":   env.WithToken(foreign),
		"forged key":     env.WithToken(forged),
		"expired":        env.WithToken(expired),
		"wrong audience": env.WithToken(wrongAud),
		"tampered":       env.WithToken(tampered),
	}
	var first *httpapi.Problem
	for name, c := range cases {
		r := c.Get("/v1/me")
		require.Equal(t, http.StatusUnauthorized, r.Status, name)
		p := problemWithoutInstance(r)
		if first == nil {
			first = &p
		}
		require.Equal(t, *first, p, "%s: every 401 has the same body", name)
	}
	require.Equal(t, http.StatusOK, env.WithToken(good).Get("/v1/me").Status, "the untouched token works")
	require.EqualValues(t, 1, env.DB.Count(t, "users"), "failed attempts create no user")
}

func TestIssuerUnreachable(t *testing.T) {
	t.Parallel()
	port := testharness.FreePort(t)
	env := apitest.New(t, apitest.Options{IssuerURL: fmt.Sprintf("http://127.0.0.1:%d/oidc", port)})
	r := env.As(opsP).Get("/v1/me")
	require.Equal(t, http.StatusServiceUnavailable, r.Status)
	require.Equal(t, "identity_provider_unavailable", r.Problem().Code)
	require.Equal(t, http.StatusServiceUnavailable, env.As(opsP).Get("/v1/operator/tenants").Status)
	require.Equal(t, http.StatusOK, env.Anonymous().Get("/healthz").Status, "public routes keep working")
	resp, err := http.Get(env.URL + "/openapi.yaml")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestMeCreatesUserAndListsTenants(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.env.As(ownerP).Get("/v1/me")
	require.Equal(t, http.StatusOK, r.Status)
	var me struct {
		User          models.User `json:"user"`
		PlatformRoles []string    `json:"platform_roles"`
		Tenants       []struct {
			Slug, Type, Role string
		} `json:"tenants"`
	}
	r.JSON(&me)
	require.Equal(t, ownerP.Email, me.User.Email)
	require.Empty(t, me.PlatformRoles)
	require.Len(t, me.Tenants, 1)
	require.Equal(t, "acme", me.Tenants[0].Slug)
	require.Equal(t, "owner", me.Tenants[0].Role)

	r = w.env.As(opsP).Get("/v1/me")
	r.JSON(&me)
	require.Equal(t, []string{"operator"}, me.PlatformRoles)
	require.Empty(t, me.Tenants)

	// A second request finds the same user rather than creating another.
	r = w.env.As(ownerP).Get("/v1/me")
	var again struct {
		User models.User `json:"user"`
	}
	r.JSON(&again)
	require.Equal(t, me2id(t, w, ownerP.Email), again.User.ID.String())
}

func me2id(t *testing.T, w *world, email string) string {
	return w.env.DB.UserID(t, email)
}

// rbacCase is one row of the RBAC table in the README.
type rbacCase struct {
	who    string
	method string
	path   string
	body   any
	want   int
}

// TestRBACTable walks the README's table: every persona against every group, and every tenant
// role against reads, developer writes and owner/admin actions.
func TestRBACTable(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	personas := map[string]apitest.Persona{
		"anonymous": {}, "user": nobodyP, "operator": opsP, "admin": adminP,
		"owner": ownerP, "tenant-admin": tadminP, "developer": devP, "viewer": viewerP, "customer-owner": custOwner,
	}
	viewerMember := "/v1/provider/members/" + w.members[viewerP.Email]
	n := 0
	newEmail := func() string { n++; return fmt.Sprintf("new%d@acme.test", n) }
	cases := []rbacCase{
		// /v1/me: any authenticated person.
		{"anonymous", "GET", "/v1/me", nil, 401},
		{"user", "GET", "/v1/me", nil, 200},
		// /v1/operator: platform role operator or admin.
		{"anonymous", "GET", "/v1/operator/tenants", nil, 401},
		{"user", "GET", "/v1/operator/tenants", nil, 403},
		{"owner", "GET", "/v1/operator/tenants", nil, 403},
		{"operator", "GET", "/v1/operator/tenants", nil, 200},
		{"admin", "GET", "/v1/operator/tenants", nil, 200},
		{"owner", "POST", "/v1/operator/tenants", map[string]any{"slug": "x1", "name": "X", "type": "customer"}, 403},
		{"operator", "POST", "/v1/operator/tenants", map[string]any{"slug": "x2", "name": "X", "type": "customer"}, 201},
		// The audit log: platform admin only.
		{"operator", "GET", "/v1/operator/audit-logs", nil, 403},
		{"admin", "GET", "/v1/operator/audit-logs", nil, 200},
		// /v1/provider: a membership in a provider tenant; viewer reads, owner/admin manage members.
		{"anonymous", "GET", "/v1/provider/members", nil, 401},
		{"user", "GET", "/v1/provider/members", nil, 403},
		{"operator", "GET", "/v1/provider/members", nil, 403},
		{"customer-owner", "GET", "/v1/provider/members", nil, 403},
		{"viewer", "GET", "/v1/provider/members", nil, 200},
		{"developer", "GET", "/v1/provider/members", nil, 200},
		{"viewer", "POST", "/v1/provider/members", map[string]any{"email": newEmail(), "role": "viewer"}, 403},
		{"developer", "POST", "/v1/provider/members", map[string]any{"email": newEmail(), "role": "viewer"}, 403},
		{"tenant-admin", "POST", "/v1/provider/members", map[string]any{"email": newEmail(), "role": "viewer"}, 201},
		{"tenant-admin", "POST", "/v1/provider/members", map[string]any{"email": newEmail(), "role": "owner"}, 403},
		{"owner", "POST", "/v1/provider/members", map[string]any{"email": newEmail(), "role": "developer"}, 201},
		{"developer", "PATCH", viewerMember, map[string]any{"role": "developer"}, 403},
		{"tenant-admin", "PATCH", viewerMember, map[string]any{"role": "viewer"}, 200},
		{"viewer", "DELETE", viewerMember, nil, 403},
		// /v1/customer: a membership in a customer tenant.
		{"owner", "GET", "/v1/customer/members", nil, 403},
		{"customer-owner", "GET", "/v1/customer/members", nil, 200},
	}
	cases = append(cases, moduleRBACCases(w)...)
	for _, tc := range cases {
		p := personas[tc.who]
		c := w.env.Anonymous()
		if p.Email != "" {
			c = w.env.As(p)
		}
		r := c.Do(tc.method, tc.path, tc.body)
		require.Equal(t, tc.want, r.Status, "%s %s %s: %s", tc.who, tc.method, tc.path, r.Body)
	}
}

// moduleRBACCases lets each module's test file add its rows to the one RBAC walk.
var moduleRBACCasesFns []func(w *world) []rbacCase

func moduleRBACCases(w *world) []rbacCase {
	var out []rbacCase
	for _, f := range moduleRBACCasesFns {
		out = append(out, f(w)...)
	}
	return out
}

func TestTenantSelection(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.env.As(opsP)
	r := ops.Post("/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": devP.Email})
	require.Equal(t, http.StatusCreated, r.Status)
	var initech models.Tenant
	r.JSON(&initech)

	dev := w.env.As(devP)
	r = dev.Get("/v1/provider/members")
	require.Equal(t, http.StatusBadRequest, r.Status, "two provider tenants and no X-Tenant")
	require.Equal(t, "tenant_required", r.Problem().Code)
	require.Equal(t, http.StatusOK, dev.InTenant("acme").Get("/v1/provider/members").Status)
	require.Equal(t, http.StatusOK, dev.InTenant("initech").Get("/v1/provider/members").Status)
	require.Equal(t, http.StatusForbidden, dev.InTenant("globex").Get("/v1/provider/members").Status, "not a member")
	require.Equal(t, http.StatusForbidden, dev.InTenant("no-such").Get("/v1/provider/members").Status, "same answer for a slug that does not exist")

	// Developer in acme, owner in initech: roles are per tenant.
	require.Equal(t, http.StatusForbidden, dev.InTenant("acme").Post("/v1/provider/members", map[string]any{"email": "a@b.test", "role": "viewer"}).Status)
	require.Equal(t, http.StatusCreated, dev.InTenant("initech").Post("/v1/provider/members", map[string]any{"email": "a@b.test", "role": "viewer"}).Status)

	// A suspended tenant is refused, and comes back when activated.
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+w.acme.ID.String()+"/suspend", nil).Status)
	r = w.env.As(ownerP).Get("/v1/provider/members")
	require.Equal(t, http.StatusForbidden, r.Status)
	require.Equal(t, "tenant_suspended", r.Problem().Code)
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+w.acme.ID.String()+"/activate", nil).Status)
	require.Equal(t, http.StatusOK, w.env.As(ownerP).Get("/v1/provider/members").Status)
}

func TestMemberRules(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	owner := w.env.As(ownerP)
	tadmin := w.env.As(tadminP)

	r := owner.Get("/v1/provider/members?limit=100")
	require.Equal(t, http.StatusOK, r.Status)
	var list struct {
		Items []struct{ ID, Email, Role string }
	}
	r.JSON(&list)
	require.Len(t, list.Items, 4)
	ownerID := ""
	for _, m := range list.Items {
		if m.Email == ownerP.Email {
			ownerID = m.ID
		}
	}
	require.NotEmpty(t, ownerID)

	r = owner.Post("/v1/provider/members", map[string]any{"email": devP.Email, "role": "viewer"})
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "already_member", r.Problem().Code)

	r = owner.Delete("/v1/provider/members/" + ownerID)
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "cannot_remove_self", r.Problem().Code)
	r = tadmin.Delete("/v1/provider/members/" + ownerID)
	require.Equal(t, http.StatusForbidden, r.Status, "an admin cannot remove an owner")
	r = owner.Patch("/v1/provider/members/"+ownerID, map[string]any{"role": "admin"})
	require.Equal(t, http.StatusConflict, r.Status)
	require.Equal(t, "last_owner", r.Problem().Code)

	// With a second owner, the first may step down.
	r = owner.Patch("/v1/provider/members/"+w.members[tadminP.Email], map[string]any{"role": "owner"})
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, http.StatusOK, owner.Patch("/v1/provider/members/"+ownerID, map[string]any{"role": "admin"}).Status)

	require.Equal(t, http.StatusNoContent, tadmin.Delete("/v1/provider/members/"+w.members[viewerP.Email]).Status)
	require.Equal(t, http.StatusForbidden, w.env.As(viewerP).Get("/v1/provider/members").Status, "a removed member is out")
	require.Equal(t, http.StatusNotFound, tadmin.Get("/v1/provider/members/"+w.members[viewerP.Email]).Status)

	// Another tenant's membership id is a 404, never a 403 that confirms it exists.
	r = w.env.As(custOwner).Get("/v1/customer/members/" + w.members[devP.Email])
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Equal(t, http.StatusNotFound, w.env.As(custOwner).Delete("/v1/customer/members/"+w.members[devP.Email]).Status)
}

func countRows(t *testing.T, env *apitest.Env, table string) int64 {
	t.Helper()
	return int64(env.DB.Count(t, table))
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.env.As(opsP)
	before := countRows(t, w.env, "tenants")
	auditBefore := countRows(t, w.env, "audit_logs")

	cases := []struct {
		name      string
		body      any
		status    int
		code      string
		field     string
		extraHead map[string]string
	}{
		{"malformed", `{"slug": "a",`, 400, "malformed_json", "", nil},
		{"not json", `slug=a`, 400, "malformed_json", "", nil},
		{"two values", `{"slug":"a","name":"A","type":"provider"} {}`, 400, "malformed_json", "", nil},
		{"unknown field", map[string]any{"slug": "ok", "name": "A", "type": "provider", "colour": "red"}, 400, "unknown_field", "colour", nil},
		{"wrong type", map[string]any{"slug": 12, "name": "A", "type": "provider"}, 400, "invalid_type", "slug", nil},
		{"bad slug", map[string]any{"slug": "Not_A_Slug", "name": "A", "type": "provider"}, 422, "validation_failed", "slug", nil},
		{"bad type", map[string]any{"slug": "fine", "name": "A", "type": "partner"}, 422, "validation_failed", "type", nil},
		{"bad email", map[string]any{"slug": "fine", "name": "A", "type": "provider", "owner_email": "not-an-email"}, 422, "validation_failed", "owner_email", nil},
		{"taken slug", map[string]any{"slug": "acme", "name": "A", "type": "provider"}, 409, "slug_taken", "", nil},
		{"oversize", map[string]any{"slug": "big", "name": strings.Repeat("x", 70<<10), "type": "provider"}, 413, "body_too_large", "", nil},
	}
	for _, tc := range cases {
		r := ops.Post("/v1/operator/tenants", tc.body)
		require.Equal(t, tc.status, r.Status, "%s: %s", tc.name, r.Body)
		p := r.Problem()
		require.Equal(t, tc.code, p.Code, tc.name)
		if tc.field != "" {
			require.NotEmpty(t, p.Errors, tc.name)
			require.Equal(t, tc.field, p.Errors[0].Field, tc.name)
		}
	}
	r := ops.Do("POST", "/v1/operator/tenants", nil)
	require.Equal(t, http.StatusBadRequest, r.Status, "no body")

	for _, q := range []string{"limit=0", "limit=101", "limit=abc", "cursor=!!!", "cursor=bm9wZQ", "type=partner"} {
		r := ops.Get("/v1/operator/tenants?" + q)
		require.Equal(t, http.StatusBadRequest, r.Status, q)
		require.Equal(t, "invalid_query", r.Problem().Code, q)
	}
	r = ops.Get("/v1/operator/tenants/not-a-uuid")
	require.Equal(t, http.StatusBadRequest, r.Status)
	require.Equal(t, "id", r.Problem().Errors[0].Field)
	require.Equal(t, http.StatusNotFound, ops.Get("/v1/operator/tenants/00000000-0000-0000-0000-000000000000").Status)

	require.Equal(t, before, countRows(t, w.env, "tenants"), "nothing written")
	require.Equal(t, auditBefore, countRows(t, w.env, "audit_logs"), "failed requests are not audited as changes")
}

func TestPagination(t *testing.T) {
	t.Parallel()
	w := newWorld(t) // 2 tenants
	ops := w.env.As(opsP)
	for i := 0; i < 5; i++ {
		require.Equal(t, http.StatusCreated, ops.Post("/v1/operator/tenants", map[string]any{"slug": fmt.Sprintf("t%d", i), "name": "T", "type": "customer"}).Status)
	}
	seen := map[string]bool{}
	path := "/v1/operator/tenants?limit=3"
	pages := 0
	for {
		r := ops.Get(path)
		require.Equal(t, http.StatusOK, r.Status)
		var page struct {
			Items      []models.Tenant `json:"items"`
			NextCursor *string         `json:"next_cursor"`
		}
		r.JSON(&page)
		pages++
		for _, it := range page.Items {
			require.False(t, seen[it.Slug], "no row twice")
			seen[it.Slug] = true
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/operator/tenants?limit=3&cursor=" + *page.NextCursor
	}
	require.Equal(t, 3, pages)
	require.Len(t, seen, 7)

	r := ops.Get("/v1/operator/tenants?type=provider")
	var page struct{ Items []models.Tenant }
	r.JSON(&page)
	require.Len(t, page.Items, 1)
	require.Equal(t, "acme", page.Items[0].Slug)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.env.As(opsP).WithHeader("Idempotency-Key", "create-initech-1")
	body := map[string]any{"slug": "initech", "name": "Initech", "type": "provider"}
	first := ops.Post("/v1/operator/tenants", body)
	require.Equal(t, http.StatusCreated, first.Status)
	second := ops.Post("/v1/operator/tenants", body)
	require.Equal(t, http.StatusCreated, second.Status, "replayed, not a 409 for the taken slug")
	require.Equal(t, "true", second.Header.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first.Body), string(second.Body))

	r := ops.Post("/v1/operator/tenants", map[string]any{"slug": "initech-2", "name": "Initech", "type": "provider"})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status)
	require.Equal(t, "idempotency_key_reused", r.Problem().Code)

	require.EqualValues(t, 1, w.env.DB.CountTenantsWithSlugPrefix(t, "initech"))
	require.EqualValues(t, 1, w.env.DB.CountAudit(t, "tenant.create", "initech"), "a replay is not a second change")

	// Keys are per caller: another operator's same key is a new request.
	other := w.env.As(adminP).WithHeader("Idempotency-Key", "create-initech-1")
	r = other.Post("/v1/operator/tenants", map[string]any{"slug": "initech-3", "name": "I", "type": "customer"})
	require.Equal(t, http.StatusCreated, r.Status)

	// A failed request is not stored: after fixing the input the same key works.
	fix := w.env.As(opsP).WithHeader("Idempotency-Key", "retry-after-error")
	require.Equal(t, http.StatusConflict, fix.Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "A", "type": "provider"}).Status)
	require.Equal(t, http.StatusCreated, fix.Post("/v1/operator/tenants", map[string]any{"slug": "acme-2", "name": "A", "type": "provider"}).Status)
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	admin := w.env.As(adminP)
	r := admin.Get("/v1/operator/audit-logs?limit=100")
	require.Equal(t, http.StatusOK, r.Status)
	var page struct {
		Items []models.AuditLog `json:"items"`
	}
	r.JSON(&page)
	// newWorld made 2 tenants (each with an owner) and added 3 members.
	actions := map[string]int{}
	for _, a := range page.Items {
		actions[a.Action]++
		require.NotEmpty(t, a.RequestID)
		require.NotEmpty(t, a.ActorEmail)
		require.Equal(t, "POST", a.Method)
	}
	require.Equal(t, map[string]int{"tenant.create": 2, "member.add": 3}, actions)

	r = admin.Get("/v1/operator/audit-logs?action=member.add&tenant_id=" + w.acme.ID.String())
	r.JSON(&page)
	require.Len(t, page.Items, 3)
	for _, a := range page.Items {
		require.Equal(t, "acme", a.TenantSlug)
		require.Equal(t, ownerP.Email, a.ActorEmail)
		require.Contains(t, []string(a.ActorRoles), "tenant:owner")
	}
	r = admin.Get("/v1/operator/audit-logs?resource_type=tenant&from=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	r.JSON(&page)
	require.Empty(t, page.Items, "time range filter")
	require.Equal(t, http.StatusBadRequest, admin.Get("/v1/operator/audit-logs?from=yesterday").Status)

	// Suspension is audited with the before/after status.
	w.env.As(opsP).Post("/v1/operator/tenants/"+w.globex.ID.String()+"/suspend", nil)
	r = admin.Get("/v1/operator/audit-logs?action=tenant.suspend")
	r.JSON(&page)
	require.Len(t, page.Items, 1)
	require.Equal(t, ops(), page.Items[0].ActorEmail)
	require.Equal(t, map[string]any{"before": "active", "after": "suspended"}, page.Items[0].Summary["status"])

	// The table is append-only: the trigger refuses UPDATE and DELETE, even to the superuser.
	update, del, truncate := w.env.DB.TamperWithAuditLog(context.Background())
	require.ErrorContains(t, update, "append-only")
	require.ErrorContains(t, del, "append-only")
	require.ErrorContains(t, truncate, "append-only")
	require.EqualValues(t, 6, countRows(t, w.env, "audit_logs"))
}

func ops() string { return opsP.Email }

// TestAuditSurvivesHostileInput: a mutation whose User-Agent is not UTF-8,
// whose X-Forwarded-For is spoofed and whose summary holds invalid text still gets its audit
// row, with the peer's address, not the header's.
func TestAuditSurvivesHostileInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := w.env.As(opsP).WithHeader("User-Agent", "curl/8 \xff\xfe bad").WithHeader("X-Forwarded-For", "6.6.6.6").WithHeader("X-Real-Ip", "6.6.6.7")
	r := c.Post("/v1/operator/tenants", map[string]any{"slug": "hostile", "name": "Caf\u00e9 \u2603", "type": "customer"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	ua, ip := w.env.DB.AuditClient(t, "tenant.create", "hostile")
	require.True(t, utf8.ValidString(ua))
	require.Contains(t, ua, "curl/8")
	require.NotContains(t, ua, "\x00")
	require.Equal(t, "127.0.0.1", ip, "X-Forwarded-For from an untrusted peer is ignored")
}
