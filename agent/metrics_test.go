package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

func TestAgentMetricsCountDecisionsAppliesAndReloads(t *testing.T) {
	m := newAgentMetrics()
	s, err := OpenCredentialStore(t.TempDir())
	require.NoError(t, err)
	h := NewVerifier(s, withDecisions(m.decided)).Handler("/verify")
	for _, key := range []string{"", "imp_unknown1.secretsecretsecret"} {
		r := httptest.NewRequest(http.MethodGet, "/verify/pub-1", nil)
		if key != "" {
			r.Header.Set("X-API-Key", key)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	m.deployed(&agentv1.DeployResult{Status: agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED})
	m.deployed(&agentv1.DeployResult{Status: agentv1.DeployStatus_DEPLOY_STATUS_FAILED})
	m.deployed(&agentv1.DeployResult{Status: agentv1.DeployStatus_DEPLOY_STATUS_FAILED})
	m.reloaded(40 * time.Millisecond)

	require.NoError(t, testutil.GatherAndCompare(m.reg, strings.NewReader(`
# HELP imprun_agent_applies_total Deploy commands answered, by outcome (succeeded, failed).
# TYPE imprun_agent_applies_total counter
imprun_agent_applies_total{outcome="failed"} 2
imprun_agent_applies_total{outcome="succeeded"} 1
# HELP imprun_agent_verifier_decisions_total Credential verifier decisions, by decision (allowed, denied) and reason.
# TYPE imprun_agent_verifier_decisions_total counter
imprun_agent_verifier_decisions_total{decision="denied",reason="malformed_credential"} 1
imprun_agent_verifier_decisions_total{decision="denied",reason="unknown_credential"} 1
`), "imprun_agent_applies_total", "imprun_agent_verifier_decisions_total"))
	n, err := testutil.GatherAndCount(m.reg, "imprun_agent_reload_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}
