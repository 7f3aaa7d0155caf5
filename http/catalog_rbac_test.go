package http_test

// The catalog's rows of the one RBAC walk (TestRBACTable): viewers read; developers write
// services, routes, backends and policies; gateways, products and plans need admin; owners
// and admins do everything; members of customer tenants and strangers get nothing.
func init() { moduleRBACCasesFns = append(moduleRBACCasesFns, catalogRBACCases) }

func catalogRBACCases(w *world) []rbacCase {
	t := w.env.T
	owner := w.env.As(ownerP)
	f := newServiceFixture(t, owner, "rbac")
	spare := idOf(created(t, owner, prov+"/api-services/"+f.service+"/routes", routeBody("spare", f.backend)))
	pol := idOf(created(t, owner, prov+"/policies", policyBody("g", "timeout", map[string]any{"request_ms": 1000})))
	gw := idOf(created(t, owner, prov+"/gateways", gatewayBody("rbac-gw")))
	gw2 := idOf(created(t, owner, prov+"/gateways", gatewayBody("rbac-gw2")))
	product := idOf(created(t, owner, prov+"/products", map[string]any{"name": "RBAC", "version": "1"}))
	plan := idOf(created(t, owner, prov+"/products/"+product+"/plans", map[string]any{"name": "Free", "rate_limit": map[string]any{"requests": 1, "period": "second"}}))
	plan2 := idOf(created(t, owner, prov+"/products/"+product+"/plans", map[string]any{"name": "Old", "rate_limit": map[string]any{"requests": 1, "period": "second"}}))
	rl := map[string]any{"requests_per_unit": 1, "unit": "second"}
	planBody := func(name string) map[string]any {
		return map[string]any{"name": name, "rate_limit": map[string]any{"requests": 1, "period": "second"}}
	}

	return []rbacCase{
		// Outsiders.
		{"anonymous", "GET", prov + "/api-services", nil, 401},
		{"user", "GET", prov + "/api-services", nil, 403},
		{"operator", "GET", prov + "/gateways", nil, 403},
		{"customer-owner", "GET", prov + "/products", nil, 403},
		{"customer-owner", "POST", prov + "/api-services", serviceBody("cust"), 403},
		// Viewers read everything and write nothing.
		{"viewer", "GET", prov + "/api-services", nil, 200},
		{"viewer", "GET", prov + "/api-services/" + f.service, nil, 200},
		{"viewer", "GET", prov + "/api-services/" + f.service + "/routes", nil, 200},
		{"viewer", "GET", prov + "/api-services/" + f.service + "/backends", nil, 200},
		{"viewer", "GET", prov + "/api-services/" + f.service + "/policies", nil, 200},
		{"viewer", "GET", prov + "/routes/" + f.route, nil, 200},
		{"viewer", "GET", prov + "/routes/" + f.route + "/effective-policies", nil, 200},
		{"viewer", "GET", prov + "/backends/" + f.backend, nil, 200},
		{"viewer", "GET", prov + "/policies", nil, 200},
		{"viewer", "GET", prov + "/policies/" + pol, nil, 200},
		{"viewer", "GET", prov + "/gateways/" + gw, nil, 200},
		{"viewer", "GET", prov + "/products/" + product, nil, 200},
		{"viewer", "GET", prov + "/products/" + product + "/plans", nil, 200},
		{"viewer", "GET", prov + "/plans/" + plan, nil, 200},
		{"viewer", "POST", prov + "/api-services", serviceBody("viewer-svc"), 403},
		{"viewer", "PATCH", prov + "/routes/" + f.route, map[string]any{"priority": 1}, 403},
		{"viewer", "DELETE", prov + "/backends/" + f.backend, nil, 403},
		{"viewer", "POST", prov + "/policies", policyBody("v", "rate-limit", rl), 403},
		// Developers write the API definitions...
		{"developer", "POST", prov + "/api-services", serviceBody("dev-svc"), 201},
		{"developer", "PATCH", prov + "/api-services/" + f.service, map[string]any{"description": "by dev"}, 200},
		{"developer", "POST", prov + "/api-services/" + f.service + "/backends", backendBody("dev-be"), 201},
		{"developer", "POST", prov + "/api-services/" + f.service + "/routes", routeBody("dev-rt", f.backend), 201},
		{"developer", "PATCH", prov + "/routes/" + f.route, map[string]any{"priority": 5}, 200},
		{"developer", "DELETE", prov + "/routes/" + spare, nil, 204},
		{"developer", "PATCH", prov + "/backends/" + f.backend, map[string]any{"description": "by dev"}, 200},
		{"developer", "POST", prov + "/api-services/" + f.service + "/policies", policyBody("dev-rl", "rate-limit", rl), 201},
		{"developer", "POST", prov + "/policies", policyBody("dev-g", "rate-limit", rl), 201},
		{"developer", "PATCH", prov + "/policies/" + pol, map[string]any{"priority": 7}, 200},
		// ...but not templates, products or plans.
		{"developer", "POST", prov + "/gateways", gatewayBody("dev-gw"), 403},
		{"developer", "PATCH", prov + "/gateways/" + gw, map[string]any{"description": "x"}, 403},
		{"developer", "DELETE", prov + "/gateways/" + gw, nil, 403},
		{"developer", "POST", prov + "/products", map[string]any{"name": "Dev", "version": "1"}, 403},
		{"developer", "PATCH", prov + "/products/" + product, map[string]any{"description": "x"}, 403},
		{"developer", "POST", prov + "/products/" + product + "/activate", nil, 403},
		{"developer", "POST", prov + "/products/" + product + "/plans", planBody("Dev"), 403},
		{"developer", "PATCH", prov + "/plans/" + plan, map[string]any{"description": "x"}, 403},
		{"developer", "DELETE", prov + "/plans/" + plan, nil, 403},
		// Admins and owners do everything.
		{"tenant-admin", "POST", prov + "/gateways", gatewayBody("admin-gw"), 201},
		{"tenant-admin", "PATCH", prov + "/gateways/" + gw, map[string]any{"description": "by admin"}, 200},
		{"tenant-admin", "POST", prov + "/products", map[string]any{"name": "Admin", "version": "1"}, 201},
		{"tenant-admin", "PATCH", prov + "/products/" + product, map[string]any{"description": "by admin"}, 200},
		{"tenant-admin", "POST", prov + "/products/" + product + "/plans", planBody("Pro"), 201},
		{"tenant-admin", "PATCH", prov + "/plans/" + plan, map[string]any{"description": "by admin"}, 200},
		{"tenant-admin", "POST", prov + "/api-services", serviceBody("admin-svc"), 201},
		{"owner", "DELETE", prov + "/gateways/" + gw2, nil, 204},
		{"owner", "DELETE", prov + "/plans/" + plan2, nil, 204},
		{"owner", "POST", prov + "/api-services/" + f.service + "/policies", policyBody("owner-rl", "rate-limit", rl), 201},
	}
}
