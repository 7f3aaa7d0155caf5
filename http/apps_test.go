package http_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
)

const apps = "/v1/customer/apps"

// Client apps' rows of the RBAC walk: customer members only; provider members and strangers
// get nothing.
func init() { moduleRBACCasesFns = append(moduleRBACCasesFns, appsRBACCases) }

func appsRBACCases(w *world) []rbacCase {
	app := idOf(created(w.env.T, w.env.As(custOwner), apps, map[string]any{"name": "rbac-app"}))
	return []rbacCase{
		{"anonymous", "GET", apps, nil, 401},
		{"user", "GET", apps, nil, 403},
		{"operator", "GET", apps, nil, 403},
		{"owner", "GET", apps, nil, 403},
		{"viewer", "GET", apps, nil, 403},
		{"owner", "POST", apps, map[string]any{"name": "provider-app"}, 403},
		{"tenant-admin", "GET", apps + "/" + app, nil, 403},
		{"customer-owner", "GET", apps, nil, 200},
		{"customer-owner", "POST", apps, map[string]any{"name": "owner-app"}, 201},
		{"customer-owner", "GET", apps + "/" + app, nil, 200},
		{"customer-owner", "PATCH", apps + "/" + app, map[string]any{"status": "inactive"}, 200},
		{"owner", "DELETE", apps + "/" + app, nil, 403},
		{"customer-owner", "DELETE", apps + "/" + app, nil, 204},
	}
}

var (
	custDev    = apitest.Persona{Email: "dev@globex.test"}
	custViewer = apitest.Persona{Email: "viewer@globex.test"}
)

// appWorld is newWorld with a developer and a viewer in globex.
func appWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(t)
	owner := w.env.As(custOwner)
	created(t, owner, "/v1/customer/members", map[string]any{"email": custDev.Email, "role": "developer"})
	created(t, owner, "/v1/customer/members", map[string]any{"email": custViewer.Email, "role": "viewer"})
	return w
}

func TestClientAppsCRUD(t *testing.T) {
	t.Parallel()
	w := appWorld(t)
	dev := w.env.As(custDev)
	viewer := w.env.As(custViewer)

	full := created(t, dev, apps, map[string]any{
		"name": "  Mobile app  ", "description": "the iOS client",
		"callback_urls":   []string{"https://app.example.com/oauth/callback?x=1", "http://localhost:3000/cb", "http://127.0.0.1:8080/cb"},
		"allowed_origins": []string{"https://app.example.com", "https://admin.example.com:8443", "http://localhost:3000", "http://127.0.0.1"},
	})
	id := idOf(full)
	require.Equal(t, "Mobile app", full["name"], "blanks around the name are trimmed")
	require.Equal(t, "the iOS client", full["description"])
	require.Equal(t, "active", full["status"], "apps start active")
	require.Len(t, full["callback_urls"], 3)
	require.Equal(t, []any{"https://app.example.com", "https://admin.example.com:8443", "http://localhost:3000", "http://127.0.0.1"}, full["allowed_origins"])
	require.NotContains(t, full, "tenant_id")

	minimal := created(t, dev, apps, map[string]any{"name": "cli", "status": "inactive"})
	require.Equal(t, []any{}, minimal["callback_urls"])
	require.Equal(t, []any{}, minimal["allowed_origins"])
	require.Equal(t, "", minimal["description"])
	require.Equal(t, "inactive", minimal["status"])

	requireProblem(t, dev.Post(apps, map[string]any{"name": "Mobile app"}), 409, "name_taken", "")
	requireProblem(t, dev.Post(apps, map[string]any{"name": " Mobile app"}), 409, "name_taken", "", "trimmed before the uniqueness check")

	// Viewers read; only developers and up write.
	require.ElementsMatch(t, []string{"Mobile app", "cli"}, names(listItems(t, viewer, apps)))
	require.Equal(t, []string{"cli"}, names(listItems(t, viewer, apps+"?status=inactive")))
	requireProblem(t, viewer.Get(apps+"?status=gone"), 400, "invalid_query", "status")
	r := viewer.Get(apps + "/" + id)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, full, r.Map())
	requireProblem(t, viewer.Post(apps, map[string]any{"name": "viewer-app"}), 403, "forbidden", "")
	requireProblem(t, viewer.Patch(apps+"/"+id, map[string]any{"name": "x"}), 403, "forbidden", "")
	requireProblem(t, viewer.Delete(apps+"/"+id), 403, "forbidden", "")

	// Pagination.
	page := viewer.Get(apps + "?limit=1").Map()
	require.Len(t, page["items"], 1)
	require.NotNil(t, page["next_cursor"])
	page2 := viewer.Get(apps + "?limit=1&cursor=" + page["next_cursor"].(string)).Map()
	require.Len(t, page2["items"], 1)
	require.Nil(t, page2["next_cursor"])

	// PATCH changes what it names and nothing else; lists are replaced whole.
	r = dev.Patch(apps+"/"+id, map[string]any{"description": "iOS and Android", "allowed_origins": []string{"https://m.example.com"}, "status": "inactive"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	after := r.Map()
	require.Equal(t, "Mobile app", after["name"])
	require.Equal(t, "iOS and Android", after["description"])
	require.Equal(t, []any{"https://m.example.com"}, after["allowed_origins"])
	require.Equal(t, full["callback_urls"], after["callback_urls"])
	require.Equal(t, "inactive", after["status"])
	r = dev.Patch(apps+"/"+id, map[string]any{"callback_urls": []string{}, "status": "active"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, []any{}, r.Map()["callback_urls"])
	requireProblem(t, dev.Patch(apps+"/"+id, map[string]any{"name": "cli"}), 409, "name_taken", "")
	r = dev.Patch(apps+"/"+id, map[string]any{"name": "Mobile"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, "Mobile", r.Map()["name"])
	require.Equal(t, http.StatusOK, dev.Patch(apps+"/"+id, map[string]any{}).Status, "an empty patch changes nothing")

	// Delete.
	require.Equal(t, http.StatusNoContent, dev.Delete(apps+"/"+id).Status)
	requireProblem(t, viewer.Get(apps+"/"+id), 404, "not_found", "")
	requireProblem(t, dev.Delete(apps+"/"+id), 404, "not_found", "")
	// The name is free again.
	created(t, dev, apps, map[string]any{"name": "Mobile"})

	var actions []string
	rows := w.env.DB.AuditLogs(t, w.globex.ID, "client_app")
	for _, a := range rows {
		actions = append(actions, a.Action)
	}
	require.Equal(t, []string{"client_app.create", "client_app.create", "client_app.update", "client_app.update", "client_app.update",
		"client_app.update", "client_app.delete", "client_app.create"}, actions)
	require.Equal(t, custDev.Email, rows[0].ActorEmail)
	require.ElementsMatch(t, []any{"description", "allowed_origins", "status"}, rows[2].Summary["changed"])
}

func TestClientAppValidation(t *testing.T) {
	t.Parallel()
	w := appWorld(t)
	dev := w.env.As(custDev)
	urls := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "https://app.example.com/cb/" + strings.Repeat("x", i+1)
		}
		return out
	}
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no name", map[string]any{"description": "x"}, "name"},
		{"blank name", map[string]any{"name": "   "}, "name"},
		{"name of 101 characters", map[string]any{"name": strings.Repeat("n", 101)}, "name"},
		{"description of 501 characters", map[string]any{"name": "a", "description": strings.Repeat("d", 501)}, "description"},
		{"unknown status", map[string]any{"name": "a", "status": "deleted"}, "status"},
		{"callback with ftp", map[string]any{"name": "a", "callback_urls": []string{"ftp://example.com/cb"}}, "callback_urls[0]"},
		{"callback over http", map[string]any{"name": "a", "callback_urls": []string{"http://example.com/cb"}}, "callback_urls[0]"},
		{"callback over http to localhost.evil", map[string]any{"name": "a", "callback_urls": []string{"http://localhost.evil.com/cb"}}, "callback_urls[0]"},
		{"relative callback", map[string]any{"name": "a", "callback_urls": []string{"/cb"}}, "callback_urls[0]"},
		{"callback without host", map[string]any{"name": "a", "callback_urls": []string{"https:///cb"}}, "callback_urls[0]"},
		{"callback not a URL", map[string]any{"name": "a", "callback_urls": []string{"not a url"}}, "callback_urls[0]"},
		{"callback with fragment", map[string]any{"name": "a", "callback_urls": []string{"https://example.com/cb#x"}}, "callback_urls[0]"},
		{"callback with credentials", map[string]any{"name": "a", "callback_urls": []string{"https://u:p@example.com/cb"}}, "callback_urls[0]"},
		{"callback with a bad port", map[string]any{"name": "a", "callback_urls": []string{"https://example.com:70000/cb"}}, "callback_urls[0]"},
		{"second callback bad", map[string]any{"name": "a", "callback_urls": []string{"https://example.com/cb", "javascript:alert(1)"}}, "callback_urls[1]"},
		{"callback twice", map[string]any{"name": "a", "callback_urls": []string{"https://example.com/cb", "https://example.com/cb"}}, "callback_urls[1]"},
		{"callback of 2049 characters", map[string]any{"name": "a", "callback_urls": []string{"https://example.com/" + strings.Repeat("p", 2030)}}, "callback_urls[0]"},
		{"21 callbacks", map[string]any{"name": "a", "callback_urls": urls(21)}, "callback_urls"},
		{"origin with a path", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com/app"}}, "allowed_origins[0]"},
		{"origin with a trailing slash", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com/"}}, "allowed_origins[0]"},
		{"origin with a query", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com?x=1"}}, "allowed_origins[0]"},
		{"origin with a fragment", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com#x"}}, "allowed_origins[0]"},
		{"origin over http", map[string]any{"name": "a", "allowed_origins": []string{"http://example.com"}}, "allowed_origins[0]"},
		{"origin without scheme", map[string]any{"name": "a", "allowed_origins": []string{"example.com"}}, "allowed_origins[0]"},
		{"wildcard origin", map[string]any{"name": "a", "allowed_origins": []string{"*"}}, "allowed_origins[0]"},
		{"origin with a bad port", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com:0"}}, "allowed_origins[0]"},
		{"origin with an empty port", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com:"}}, "allowed_origins[0]"},
		{"second origin bad", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com", "https://example.com/x"}}, "allowed_origins[1]"},
		{"origin twice", map[string]any{"name": "a", "allowed_origins": []string{"https://example.com", "https://EXAMPLE.com"}}, "allowed_origins[1]"},
		{"21 origins", map[string]any{"name": "a", "allowed_origins": func() []string {
			out := make([]string, 21)
			for i := range out {
				out[i] = "https://o" + strings.Repeat("x", i+1) + ".example.com"
			}
			return out
		}()}, "allowed_origins"},
	}
	for _, tc := range cases {
		requireProblem(t, dev.Post(apps, tc.body), 422, "validation_failed", tc.field, tc.name)
	}
	requireProblem(t, dev.Post(apps, map[string]any{"name": 7}), 400, "invalid_type", "name")
	requireProblem(t, dev.Post(apps, map[string]any{"name": "a", "callback_urls": "https://example.com"}), 400, "invalid_type", "callback_urls")
	requireProblem(t, dev.Post(apps, map[string]any{"name": "a", "redirect_uris": []string{}}), 400, "unknown_field", "redirect_uris")
	requireProblem(t, dev.Post(apps, "{"), 400, "malformed_json", "")
	// Several failures are reported together.
	r := dev.Post(apps, map[string]any{"name": "", "description": strings.Repeat("d", 501), "status": "x"})
	requireProblem(t, r, 422, "validation_failed", "name")
	require.Len(t, r.Problem().Errors, 3)
	require.Empty(t, listItems(t, dev, apps), "nothing was created")

	// A name of exactly 100 characters (multi-byte counts as one) and a description of 500 pass.
	created(t, dev, apps, map[string]any{"name": strings.Repeat("é", 100), "description": strings.Repeat("d", 500),
		"callback_urls": urls(20), "allowed_origins": []string{"https://[2001:db8::1]:8443", "http://localhost"}})

	// PATCH validates the same way and a bad patch changes nothing.
	id := idOf(created(t, dev, apps, map[string]any{"name": "web", "allowed_origins": []string{"https://web.example.com"}}))
	requireProblem(t, dev.Patch(apps+"/"+id, map[string]any{"name": ""}), 422, "validation_failed", "name")
	requireProblem(t, dev.Patch(apps+"/"+id, map[string]any{"description": "ok", "allowed_origins": []string{"https://web.example.com/path"}}), 422, "validation_failed", "allowed_origins[0]")
	requireProblem(t, dev.Patch(apps+"/"+id, map[string]any{"status": "archived"}), 422, "validation_failed", "status")
	requireProblem(t, dev.Patch(apps+"/"+id, map[string]any{"id": uuid.NewString()}), 400, "unknown_field", "id")
	got := dev.Get(apps + "/" + id).Map()
	require.Equal(t, "", got["description"])
	require.Equal(t, []any{"https://web.example.com"}, got["allowed_origins"])
	requireProblem(t, dev.Get(apps+"/not-a-uuid"), 400, "invalid_id", "id")
}

// Another tenant's app is a 404 on every route, the same as an app that does not exist.
func TestClientAppTenantIsolation(t *testing.T) {
	t.Parallel()
	w := appWorld(t)
	hooliOwner := apitest.Persona{Email: "owner@hooli.test"}
	created(t, w.env.As(opsP), "/v1/operator/tenants", map[string]any{"slug": "hooli", "name": "Hooli", "type": "customer", "owner_email": hooliOwner.Email})
	globex := w.env.As(custDev)
	hooli := w.env.As(hooliOwner)
	id := idOf(created(t, globex, apps, map[string]any{"name": "shared-name"}))
	created(t, hooli, apps, map[string]any{"name": "shared-name"}) // names are unique per tenant only

	for _, path := range []string{apps + "/" + id, apps + "/" + uuid.NewString()} {
		requireProblem(t, hooli.Get(path), 404, "not_found", "")
		requireProblem(t, hooli.Patch(path, map[string]any{"name": "mine"}), 404, "not_found", "")
		requireProblem(t, hooli.Patch(path, map[string]any{"name": ""}), 404, "not_found", "", "404 before the body is judged")
		requireProblem(t, hooli.Delete(path), 404, "not_found", "")
	}
	require.Equal(t, []string{"shared-name"}, names(listItems(t, hooli, apps)))
	r := globex.Get(apps + "/" + id)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "shared-name", r.Map()["name"], "untouched")
}

// An app with live subscriptions, active credentials or a revocation still rolling out can't
// be deleted; once all of it has ended the app goes with its history.
func TestClientAppDeleteInUse(t *testing.T) {
	t.Parallel()
	w := appWorld(t)
	m := newMarket(t, w)
	prod := m.product(t, "Used", "", nil)
	pub := m.publish(t, prod, "prod", "public", models.PublishPublished, time.Now())
	dev := w.env.As(custDev)
	app := idOf(created(t, dev, apps, map[string]any{"name": "busy"}))
	db := w.env.DB

	sub := db.InsertSubscription(t, w.globex.ID, w.acme.ID, pub, app, "pending")
	for _, st := range []string{"pending", "active", "suspended"} {
		db.SetSubscriptionStatus(t, sub, st)
		r := dev.Delete(apps + "/" + app)
		requireProblem(t, r, 409, "in_use", "", "subscription "+st)
	}
	for _, st := range []string{"cancelled", "rejected", "expired"} {
		db.SetSubscriptionStatus(t, sub, st)
	}

	cred := db.InsertAPIKey(t, w.globex.ID, app, "imp_"+uuid.NewString()[:8], strings.Repeat("a", 64), "active", nil)
	requireProblem(t, dev.Delete(apps+"/"+app), 409, "in_use", "", "an active credential")
	db.RevokeCredential(t, cred)
	db.InsertRollout(t, cred, m.cluster, 2, "revoke", "pending")
	requireProblem(t, dev.Delete(apps+"/"+app), 409, "in_use", "", "a revocation not yet confirmed")
	// A rotated credential points at its predecessor.
	db.InsertAPIKey(t, w.globex.ID, app, "imp_"+uuid.NewString()[:8], strings.Repeat("b", 64), "expired", &cred)
	db.ConfirmRollouts(t, cred)

	require.Equal(t, http.StatusNoContent, dev.Delete(apps+"/"+app).Status)
	require.Zero(t, db.CountAppHistory(t, app), "the ended history went with the app")
	requireProblem(t, dev.Get(apps+"/"+app), 404, "not_found", "")
}
