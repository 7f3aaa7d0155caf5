package http_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Rollout requests are checked whole before anything is saved or started: bad input is a 4xx
// naming the field, a viewer may not roll out, another tenant's rollout is a 404, and with the
// workflow service away a valid request is a 503 that leaves nothing behind.
func TestRolloutRequestsAreCheckedBeforeAnythingStarts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops, owner := w.env.As(opsP), w.env.As(ownerP)
	created(t, ops, "/v1/operator/tenants/"+w.acme.ID.String()+"/domains", map[string]any{"domain": "example.com"})
	cluster := idOf(created(t, ops, "/v1/operator/clusters", map[string]any{"name": "kr-1", "region": "kr-central",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "envoy-gateway"}}}}))
	nginxOnly := idOf(created(t, ops, "/v1/operator/clusters", map[string]any{"name": "us-1", "region": "us-east",
		"capabilities": map[string]any{"gateway_classes": []map[string]any{{"name": "nginx"}}}}))
	svc := idOf(created(t, owner, "/v1/provider/api-services", map[string]any{"name": "payments", "version": "1.0.0", "status": "active"}))
	be := idOf(created(t, owner, "/v1/provider/api-services/"+svc+"/backends", map[string]any{"name": "payments-be", "scheme": "http",
		"endpoints": []map[string]any{{"host": "payments.internal", "port": 8080}}}))
	created(t, owner, "/v1/provider/api-services/"+svc+"/routes", routeBody("charges", be))
	gw := idOf(created(t, owner, "/v1/provider/gateways", gatewayBody("edge")))
	product := idOf(created(t, owner, "/v1/provider/products", map[string]any{"name": "Payments", "version": "1.0.0", "api_services": []string{svc}}))
	r := owner.Post("/v1/provider/products/"+product+"/activate", nil)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))

	body := func(targets map[string]any, strategy map[string]any) map[string]any {
		b := map[string]any{"product_id": product, "gateway_id": gw, "environment": "prod", "hostname": "pay.example.com", "targets": targets}
		if strategy != nil {
			b["strategy"] = strategy
		}
		return b
	}
	ids := map[string]any{"cluster_ids": []string{cluster}}

	requireProblem(t, w.env.As(viewerP).Post("/v1/provider/rollouts", body(ids, nil)), http.StatusForbidden, "forbidden", "")
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(map[string]any{}, nil)), http.StatusUnprocessableEntity, "validation_failed", "targets")
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(ids, map[string]any{"max_failures": "5 clusters"})),
		http.StatusUnprocessableEntity, "validation_failed", "strategy.max_failures")
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(ids, map[string]any{"waves": []map[string]any{{"clusters": []string{uuid.NewString()}}}})),
		http.StatusUnprocessableEntity, "validation_failed", "strategy.waves[0].clusters")
	unknown := uuid.NewString()
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(map[string]any{"cluster_ids": []string{unknown}}, nil)),
		http.StatusUnprocessableEntity, "validation_failed", "targets["+unknown+"].cluster_id")
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(map[string]any{"cluster_ids": []string{cluster, nginxOnly}}, nil)),
		http.StatusUnprocessableEntity, "validation_failed", "targets["+nginxOnly+"].gateway_id")
	requireProblem(t, owner.Post("/v1/provider/rollouts", body(map[string]any{"selector": map[string]any{"region": "mars"}}, nil)),
		http.StatusUnprocessableEntity, "validation_failed", "targets.selector")

	r = owner.Post("/v1/provider/rollouts", body(map[string]any{"selector": map[string]any{"region": "kr-central"}}, nil))
	requireProblem(t, r, http.StatusServiceUnavailable, "temporal_unavailable", "")
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	require.Equal(t, 0, w.env.DB.Count(t, "rollouts"), "nothing was saved")

	requireProblem(t, owner.Get("/v1/provider/rollouts/"+uuid.NewString()), http.StatusNotFound, "not_found", "")
	list := owner.Get("/v1/provider/rollouts")
	require.Equal(t, http.StatusOK, list.Status, string(list.Body))
	require.Empty(t, list.Map()["items"])
}
