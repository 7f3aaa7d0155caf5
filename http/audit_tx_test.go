package http_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
)

// auditTxWorld is a customer tenant on an API with Temporal (credentials need it), and a
// trigger that makes the audit insert of any action listed in audit_fail fail, as a full disk
// or a bad row would.
func auditTxWorld(t *testing.T) (*apitest.Env, *apitest.Client) {
	t.Helper()
	env := apitest.New(t, apitest.Options{WithTemporal: true})
	r := env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "globex", "name": "Globex", "type": "customer", "owner_email": custOwner.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	env.DB.RefuseAuditInserts(t)
	return env, env.As(custOwner)
}

func failAudit(t *testing.T, env *apitest.Env, action string) {
	t.Helper()
	env.DB.RefuseAuditOf(t, action)
}

// auditXmins lists the transaction ids of the audit rows of action on a resource.
func auditXmins(t *testing.T, env *apitest.Env, action, resourceID string) []string {
	t.Helper()
	return env.DB.AuditXmins(t, action, resourceID)
}

func rowXmin(t *testing.T, env *apitest.Env, table, id string) string {
	t.Helper()
	return env.DB.RowXmin(t, table, id)
}

// The audit row of an app or credential change is written in the change's own transaction:
// exactly one row (the middleware adds none), with the transaction id of the change.
func TestAuditCommitsWithTheChange(t *testing.T) {
	t.Parallel()
	env, owner := auditTxWorld(t)

	app := idOf(created(t, owner, apps, map[string]any{"name": "billing"}))
	require.Equal(t, []string{rowXmin(t, env, "client_apps", app)}, auditXmins(t, env, "client_app.create", app))
	r := owner.Patch(apps+"/"+app, map[string]any{"description": "pays"})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Equal(t, []string{rowXmin(t, env, "client_apps", app)}, auditXmins(t, env, "client_app.update", app))

	cred := created(t, owner, apps+"/"+app+"/credentials", map[string]any{"label": "ci"})
	credID := cred["id"].(string)
	require.Len(t, auditXmins(t, env, "credential.create", credID), 1)
	r = owner.Post("/v1/customer/credentials/"+credID+"/revoke", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	require.Len(t, auditXmins(t, env, "credential.revoke", credID), 1)

	require.Equal(t, http.StatusOK, env.DB.AuditStatusCode(t, "credential.revoke", credID), "the row carries the status the request answered with")
}

// When the audit row can't be written, the change is rolled back and the request fails: no
// committed mutation goes unaudited.
func TestFailedAuditRollsBackTheChange(t *testing.T) {
	t.Parallel()
	env, owner := auditTxWorld(t)
	count := func(table string) int { return env.DB.Count(t, table) }

	failAudit(t, env, "client_app.create")
	r := owner.Post(apps, map[string]any{"name": "unaudited"})
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Zero(t, count("client_apps"), "the app was rolled back with its audit row")

	env.DB.AllowAuditInserts(t)
	app := idOf(created(t, owner, apps, map[string]any{"name": "billing"}))
	failAudit(t, env, "client_app.update")
	r = owner.Patch(apps+"/"+app, map[string]any{"name": "renamed"})
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Equal(t, "billing", owner.Get(apps + "/" + app).Map()["name"])

	failAudit(t, env, "credential.create")
	r = owner.Post(apps+"/"+app+"/credentials", map[string]any{"label": "ci"})
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Zero(t, count("credentials"), "no credential (and so no rollout intent) without its audit row")

	env.DB.AllowAuditInserts(t)
	credID := created(t, owner, apps+"/"+app+"/credentials", map[string]any{"label": "ci"})["id"].(string)
	failAudit(t, env, "credential.revoke")
	r = owner.Post("/v1/customer/credentials/"+credID+"/revoke", nil)
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Equal(t, "active", owner.Get("/v1/customer/credentials/" + credID).Map()["status"], "the revocation was rolled back")

	failAudit(t, env, "client_app.delete")
	r = owner.Delete(apps + "/" + app)
	require.NotEqual(t, http.StatusNoContent, r.Status, string(r.Body))
	require.Equal(t, http.StatusOK, owner.Get(apps+"/"+app).Status)
}

// Routes without a use case of their own transaction (the catalog, operator routes) run in one
// transaction with their audit row: the row carries the change's transaction id, and when the
// row cannot be written the change is rolled back, nothing is answered as a success, and the
// headers the handler prepared (Location) are not sent.
func TestRequestTransactionCarriesTheAuditRow(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	env, owner := w.env, w.env.As(ownerP)
	env.DB.RefuseAuditInserts(t)

	svc := idOf(created(t, owner, prov+"/api-services", serviceBody("payments")))
	require.Equal(t, []string{env.DB.RowXmin(t, "api_services", svc)}, env.DB.AuditXmins(t, "api_service.create", svc),
		"one audit row, written by the service's own transaction")

	env.DB.RefuseAuditOf(t, "api_service.create")
	r := owner.Post(prov+"/api-services", serviceBody("ledger"))
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Empty(t, r.Header.Get("Location"), "the success's headers were not sent")
	require.Len(t, listItems(t, owner, prov+"/api-services"), 1, "the unaudited service was rolled back")

	env.DB.RefuseAuditOf(t, "api_service.update")
	r = owner.Patch(prov+"/api-services/"+svc, map[string]any{"description": "unaudited"})
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Equal(t, "test service", owner.Get(prov + "/api-services/" + svc).Map()["description"], "the unaudited change was rolled back")

	// An operator route, the same way.
	tenants := env.DB.Count(t, "tenants")
	env.DB.RefuseAuditOf(t, "tenant.create")
	r = env.As(opsP).Post("/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "provider", "owner_email": "o@initech.test"})
	require.Equal(t, http.StatusInternalServerError, r.Status, string(r.Body))
	require.Equal(t, tenants, env.DB.Count(t, "tenants"), "the unaudited tenant was rolled back")

	// A refused request (4xx) changes nothing and writes no row.
	env.DB.AllowAuditInserts(t)
	before := env.DB.Count(t, "audit_logs")
	r = owner.Post(prov+"/api-services", map[string]any{"name": ""})
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, string(r.Body))
	require.Equal(t, before, env.DB.Count(t, "audit_logs"))
}

// A credential's rollout is planned under its row lock (activities.PlanCredentialSync): a
// revocation's version bump waits until that plan has committed its rollout rows, so the
// revocation's own plan always sees (and revokes) what the older version sent.
func TestRevocationWaitsForAPlanInProgress(t *testing.T) {
	t.Parallel()
	env, owner := auditTxWorld(t)
	app := idOf(created(t, owner, apps, map[string]any{"name": "billing"}))
	credID := created(t, owner, apps+"/"+app+"/credentials", map[string]any{"label": "ci"})["id"].(string)

	locked, release, done := make(chan struct{}), make(chan struct{}), make(chan int, 1)
	go func() {
		_ = env.Store.InTx(context.Background(), func(ctx context.Context) error {
			if _, err := env.Store.LockCredential(ctx, uuid.MustParse(credID)); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	go func() { done <- owner.Post("/v1/customer/credentials/"+credID+"/revoke", nil).Status }()
	select {
	case s := <-done:
		t.Fatalf("the revocation committed (%d) while a plan held the credential", s)
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	select {
	case s := <-done:
		require.Equal(t, http.StatusOK, s)
	case <-time.After(20 * time.Second):
		t.Fatal("the revocation never went through once the plan committed")
	}
}

// An Idempotency-Key whose request died before it answered (its reservation left unfinished):
// on a route that runs in the request's transaction the key is completed in that transaction,
// so an unfinished one means nothing committed, and a retry after the stale limit runs the
// request instead of waiting forever; a fresh one still answers 409. Routes whose use cases
// commit on their own keep the reservation (the change may have committed).
func TestStaleIdempotencyReservationTakenOver(t *testing.T) {
	t.Parallel()
	env, owner := auditTxWorld(t)
	w := newWorld(t)
	dev := w.env.As(devP).WithHeader("Idempotency-Key", "svc-crash")
	first := dev.Post(prov+"/api-services", serviceBody("crashy"))
	require.Equal(t, http.StatusCreated, first.Status, string(first.Body))
	// As if the process died after reserving the key and before its transaction committed.
	require.Equal(t, http.StatusNoContent, w.env.As(devP).Delete(prov+"/api-services/"+idOf(first.Map())).Status)

	w.env.DB.Unfinish(t, "svc-crash", 10*time.Second)
	requireProblem(t, dev.Post(prov+"/api-services", serviceBody("crashy")), 409, "idempotency_in_flight", "")
	w.env.DB.Unfinish(t, "svc-crash", 3*time.Minute)
	again := dev.Post(prov+"/api-services", serviceBody("crashy"))
	require.Equal(t, http.StatusCreated, again.Status, string(again.Body))
	require.Empty(t, again.Header.Get("Idempotent-Replayed"), "the request ran again")
	replay := dev.Post(prov+"/api-services", serviceBody("crashy"))
	require.Equal(t, "true", replay.Header.Get("Idempotent-Replayed"), "and its answer is stored")
	require.JSONEq(t, string(again.Body), string(replay.Body))

	// A route that owns its transaction: the stale reservation stays.
	c := owner.WithHeader("Idempotency-Key", "app-crash")
	require.Equal(t, http.StatusCreated, c.Post(apps, map[string]any{"name": "shop"}).Status)
	env.DB.Unfinish(t, "app-crash", 3*time.Minute)
	r := c.Post(apps, map[string]any{"name": "shop"})
	require.Equal(t, http.StatusConflict, r.Status, string(r.Body))
}
