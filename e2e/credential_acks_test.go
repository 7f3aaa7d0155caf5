package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"

	"github.com/imprun/imprun-server/workflows"
)

// The agents of a cluster are replicas: each acknowledges a credential change, every
// acknowledgement is kept as its delivery row, and the rollout is told once, by the first
// success (it confirms the cluster with it and would ignore the others, each a history event
// and a workflow task of its run).
func TestCredentialRolloutSignalledOncePerCluster(t *testing.T) {
	t.Parallel()
	const agents = 4
	ps := newPropagationStack(t, 1, agents)
	app := ps.app(t, 1)
	r := ps.customer.Post("/v1/customer/apps/"+app+"/credentials", map[string]any{"type": "api_key"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	id := r.Map()["id"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		pr, err := ps.env.DB.CredentialPropagation(ctx, id)
		return err == nil && pr.Confirmed > 0 && pr.Acked == agents // Confirmed counts the rollout row once per delivery
	}, 50*time.Second, 20*time.Millisecond, "the cluster confirmed and every agent's acknowledgement stored")

	tc, err := ps.env.Temporal.Client()
	require.NoError(t, err)
	wid := workflows.CredentialSyncWorkflowID(id, 1)
	// The run ends once the cluster is confirmed; the other acknowledgements come at the same
	// time, so a signal for any of them would be in the history by then or be refused.
	require.Eventually(t, func() bool {
		d, err := tc.DescribeWorkflowExecution(ctx, wid, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_COMPLETED
	}, 30*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // what the sweeper or a late pass-on would still signal
	signals := 0
	it := tc.GetWorkflowHistory(ctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		if a := e.GetWorkflowExecutionSignaledEventAttributes(); a != nil && a.GetSignalName() == workflows.SignalCredentialAck {
			signals++
		}
	}
	require.Equal(t, 1, signals, "one acknowledgement signal for the cluster's %d agents", agents)
}
