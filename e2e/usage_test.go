package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
)

// lastUsed reads a credential's last_used_at through the REST detail (nil while unused).
func (m *market) lastUsed(t testing.TB, id string) *time.Time {
	t.Helper()
	r := m.customer.Get("/v1/customer/credentials/" + id)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var d struct {
		LastUsedAt *time.Time `json:"last_used_at"`
	}
	r.JSON(&d)
	return d.LastUsedAt
}

func (m *market) newKey(t testing.TB, appID string) (id, key string) {
	t.Helper()
	c := created(t, m.customer, "/v1/customer/apps/"+appID+"/credentials", map[string]any{"type": "api_key"})
	return c["id"].(string), c["key"].(string)
}

// TestCredentialLastUsed: a key the agent's Verifier accepts shows its last-used time on the
// credential once the agent's next heartbeat is flushed; an agent reporting use of a credential
// its cluster was never sent changes nothing.
func TestCredentialLastUsed(t *testing.T) {
	t.Parallel()
	m := newMarket(t, false, 0)
	m.subscribe(t, m.pubA)
	m.subscribe(t, m.pubB)
	credID, key := m.newKey(t, m.appID)
	m.waitRollout(t, credID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutUpsert, 2) }, "credential never confirmed on both clusters")

	// A second app subscribed on cluster B only: its credential is never sent to cluster A.
	app2 := created(t, m.customer, "/v1/customer/apps", map[string]any{"name": "backoffice"})["id"].(string)
	r := m.customer.Post("/v1/customer/subscriptions", map[string]any{"product_publish_id": m.pubB, "client_app_id": app2})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	otherID, _ := m.newKey(t, app2)
	m.waitRollout(t, otherID, func(d credentialDetail) bool { return allConfirmed(d, models.RolloutUpsert, 1) }, "second credential never confirmed on B")
	require.Nil(t, m.lastUsed(t, credID), "never used yet")

	// A request through agent A's gateway check.
	before := time.Now()
	d := m.agentA.agent.Verifier().VerifyAPIKey(m.pubA, key)
	require.True(t, d.Allowed, "%+v", d)
	require.Equal(t, credID, d.CredentialID)
	var used *time.Time
	require.Eventually(t, func() bool { used = m.lastUsed(t, credID); return used != nil }, 15*time.Second, 100*time.Millisecond,
		"last_used_at never set after the agent's heartbeat")
	require.WithinRange(t, *used, before.Add(-time.Millisecond), time.Now())
	list := m.customer.Get("/v1/customer/apps/" + m.appID + "/credentials").Map()["items"].([]any)
	require.Len(t, list, 1)
	require.NotNil(t, list[0].(map[string]any)["last_used_at"], "the list shows it too")

	// A forged report from an agent of cluster A: use of the cluster-B-only credential, of an
	// unknown credential and a malformed id, beside a genuine report for credential 1 whose
	// arrival proves the report was flushed.
	sim, err := dialSimAgent(m.env.Replica.Addr, &agentv1.ConnectRequest{
		Credential: &agentv1.ConnectRequest_RegistrationToken{RegistrationToken: m.token(t)}, AgentName: "forger"})
	require.NoError(t, err)
	t.Cleanup(sim.close)
	require.Equal(t, m.clusterID, sim.ClusterID)
	control := time.Now().UTC().Truncate(time.Microsecond)
	require.NoError(t, sim.heartbeat(
		&agentv1.CredentialUsage{CredentialId: otherID, LastUsedAt: timestamppb.New(control), Requests: 5},
		&agentv1.CredentialUsage{CredentialId: uuid.NewString(), LastUsedAt: timestamppb.New(control), Requests: 1},
		&agentv1.CredentialUsage{CredentialId: "not-a-uuid", LastUsedAt: timestamppb.New(control), Requests: 1},
		&agentv1.CredentialUsage{CredentialId: credID, LastUsedAt: timestamppb.New(control), Requests: 1},
	))
	require.Eventually(t, func() bool { u := m.lastUsed(t, credID); return u != nil && u.Equal(control) }, 15*time.Second, 50*time.Millisecond,
		"the genuine entry of the report was never flushed")
	require.Nil(t, m.lastUsed(t, otherID), "an agent of cluster A can't touch a credential of cluster B")

	// An older report never moves the time back.
	require.NoError(t, sim.heartbeat(&agentv1.CredentialUsage{CredentialId: credID, LastUsedAt: timestamppb.New(control.Add(-time.Hour))}))
	time.Sleep(3 * timing.FlushInterval)
	require.True(t, m.lastUsed(t, credID).Equal(control))
}
