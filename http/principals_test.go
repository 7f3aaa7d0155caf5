package http_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
)

// The principal cache never serves a removed membership or a suspended tenant: on the replica
// that made the change at once, on another replica of the same database as soon as the change's
// NOTIFY arrives (the test allows it 2 s; it takes milliseconds).
func TestPrincipalCacheFollowsMembershipAndTenantChanges(t *testing.T) {
	t.Parallel()
	a := apitest.New(t, apitest.Options{})
	b := apitest.New(t, apitest.Options{DBURL: a.DBURL}) // a second api replica
	ops := a.As(opsP)
	r := ops.Post("/v1/operator/tenants", map[string]any{"slug": "acme", "name": "Acme", "type": "provider", "owner_email": ownerP.Email})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	tenantID := r.Map()["id"].(string)
	owner := a.As(ownerP)
	r = owner.Post(prov+"/members", map[string]any{"email": devP.Email, "role": "developer"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	memberID := r.Map()["id"].(string)

	devA, devB := a.As(devP), b.WithToken(a.Token(devP))
	// Both replicas now hold the developer's principal with its membership.
	for range 3 {
		require.Equal(t, http.StatusOK, devA.Get(prov+"/api-services").Status)
		require.Equal(t, http.StatusOK, devB.Get(prov+"/api-services").Status)
	}

	// Suspending the tenant: refused at once here, and on the other replica.
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+tenantID+"/suspend", nil).Status)
	r = devA.Get(prov + "/api-services")
	require.Equal(t, http.StatusForbidden, r.Status)
	require.Equal(t, "tenant_suspended", r.Problem().Code)
	require.Eventually(t, func() bool { return devB.Get(prov+"/api-services").Status == http.StatusForbidden }, 2*time.Second, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+tenantID+"/activate", nil).Status)
	require.Equal(t, http.StatusOK, devA.Get(prov+"/api-services").Status)
	require.Eventually(t, func() bool { return devB.Get(prov+"/api-services").Status == http.StatusOK }, 2*time.Second, 10*time.Millisecond)

	// Removing the membership: the same.
	require.Equal(t, http.StatusNoContent, owner.Delete(prov+"/members/"+memberID).Status)
	require.Equal(t, http.StatusForbidden, devA.Get(prov+"/api-services").Status)
	require.Eventually(t, func() bool { return devB.Get(prov+"/api-services").Status == http.StatusForbidden }, 2*time.Second, 10*time.Millisecond)
}
