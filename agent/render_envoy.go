package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/imprun/imprun-server/saferegex"
)

// envoyRenderer renders Gateway API and Envoy Gateway resources: one Gateway per publish, an
// HTTPRoute per route, an Envoy Gateway Backend per backend, and BackendTrafficPolicy /
// SecurityPolicy objects for the route's effective policies and the publish's auth mode.
type envoyRenderer struct {
	opts RenderOptions
}

const (
	gatewayAPIVersion = "gateway.networking.k8s.io/v1"
	envoyAPIVersion   = "gateway.envoyproxy.io/v1alpha1"
)

// object is a Kubernetes object under construction. Maps keep yaml.v3 output deterministic
// (keys are sorted), which matters because resource hashes decide created/updated/unchanged.
type object = map[string]any

type envoyDoc struct {
	res RenderedResource
	obj object
}

func (r envoyRenderer) meta(name string, s *Snapshot) object {
	return object{
		"name":      name,
		"namespace": r.opts.Namespace,
		"labels": object{
			"app.kubernetes.io/managed-by": "imprun-agent",
			"imprun.dev/publish-id":        s.PublishID,
			"imprun.dev/revision":          strconv.Itoa(int(s.Revision)),
		},
	}
}

func (r envoyRenderer) RenderPublish(s *Snapshot) (*Rendered, error) {
	pid := shortID(s.PublishID)
	var docs []envoyDoc
	add := func(kind, apiVersion, name string, spec object) {
		docs = append(docs, envoyDoc{
			res: RenderedResource{Kind: kind, Name: name, Namespace: r.opts.Namespace},
			obj: object{"apiVersion": apiVersion, "kind": kind, "metadata": r.meta(name, s), "spec": spec},
		})
	}

	gatewayName := dnsName("imp", pid, s.Gateway.Name)
	listeners, err := r.listeners(s)
	if err != nil {
		return nil, err
	}
	gatewayClass := firstNonEmpty(s.Gateway.GatewayClass, GatewayClassEnvoy)
	add("Gateway", gatewayAPIVersion, gatewayName, object{"gatewayClassName": gatewayClass, "listeners": listeners})

	for _, svc := range s.APIServices {
		for _, b := range svc.Backends {
			if err := checkEgress(r.opts.Egress, svc, b); err != nil {
				return nil, err
			}
			spec, err := envoyBackendSpec(svc, b)
			if err != nil {
				return nil, err
			}
			add("Backend", envoyAPIVersion, dnsName("imp", pid, svc.Name, b.Name), spec)
		}
		for _, route := range svc.Routes {
			routeName := dnsName("imp", pid, svc.Name, route.Name)
			policies, err := decodeRoutePolicies(svc, route)
			if err != nil {
				return nil, err
			}
			spec, err := r.httpRouteSpec(s, svc, route, policies, gatewayName, pid)
			if err != nil {
				return nil, err
			}
			add("HTTPRoute", gatewayAPIVersion, routeName, spec)

			target := []any{object{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": routeName}}
			traffic, security := r.envoyPolicies(s, svc, route, policies)
			if len(traffic) > 0 {
				traffic["targetRefs"] = target
				add("BackendTrafficPolicy", envoyAPIVersion, routeName, traffic)
			}
			if len(security) > 0 {
				security["targetRefs"] = target
				add("SecurityPolicy", envoyAPIVersion, routeName, security)
			}
		}
	}

	buf := make([]byte, 0, 4096)
	buf = fmt.Appendf(buf, "# Rendered by imprun-agent for publish %s revision %d. Do not edit.\n", s.PublishID, s.Revision)
	out := &Rendered{FileExt: "yaml"}
	for _, d := range docs {
		buf = append(buf, "---\n"...)
		start := len(buf)
		var err error
		if buf, err = appendYAML(buf, d.obj); err != nil {
			return nil, fmt.Errorf("render %s %s: %w", d.res.Kind, d.res.Name, err)
		}
		d.res.Hash = hashText(buf[start:])
		out.Resources = append(out.Resources, d.res)
	}
	out.Config = buf
	return out, nil
}

func (r envoyRenderer) listeners(s *Snapshot) ([]any, error) {
	var out []any
	for i, l := range s.Gateway.Listeners {
		if l.Port < 1 || l.Port > 65535 {
			return nil, fmt.Errorf("listener %q: port %d out of range", l.Name, l.Port)
		}
		protocol := strings.ToUpper(firstNonEmpty(l.Protocol, "HTTP"))
		lo := object{
			"name":     dnsName(firstNonEmpty(l.Name, "listener-"+strconv.Itoa(i))),
			"port":     l.Port,
			"protocol": protocol,
		}
		if h := firstNonEmpty(l.Hostname, s.Hostname); h != "" {
			lo["hostname"] = h
		}
		if protocol == "HTTPS" || protocol == "TLS" {
			mode := "Terminate"
			ref := ""
			if l.TLS != nil {
				mode = firstNonEmpty(l.TLS.Mode, mode)
				ref = l.TLS.CertificateRef
			}
			tls := object{"mode": mode}
			if ref != "" {
				// The Secret of a tenant's certificate carries the tenant in its name, so a
				// tenant can name only its own (snapshots from before tenant_id name it bare).
				if s.TenantID != "" {
					ref = dnsName("tenant", shortID(s.TenantID), ref)
				}
				tls["certificateRefs"] = []any{object{"kind": "Secret", "name": ref}}
			} else if mode == "Terminate" {
				return nil, fmt.Errorf("listener %q: %s with TLS termination needs a certificate_ref", l.Name, protocol)
			}
			lo["tls"] = tls
		}
		out = append(out, lo)
	}
	return out, nil
}

func envoyBackendSpec(svc APIService, b Backend) (object, error) {
	if len(b.Endpoints) == 0 {
		return nil, fmt.Errorf("service %s backend %s has no endpoints", svc.Name, b.Name)
	}
	var endpoints []any
	for _, ep := range b.Endpoints {
		if ep.Host == "" || ep.Port < 1 || ep.Port > 65535 {
			return nil, fmt.Errorf("service %s backend %s: bad endpoint %s:%d", svc.Name, b.Name, ep.Host, ep.Port)
		}
		if net.ParseIP(ep.Host) != nil {
			endpoints = append(endpoints, object{"ip": object{"address": ep.Host, "port": ep.Port}})
		} else {
			endpoints = append(endpoints, object{"fqdn": object{"hostname": ep.Host, "port": ep.Port}})
		}
	}
	spec := object{"endpoints": endpoints}
	switch strings.ToLower(b.Scheme) {
	case "grpc":
		spec["appProtocols"] = []any{"gateway.envoyproxy.io/h2c"}
	case "https":
		spec["tls"] = envoyBackendTLS(b)
	case "grpcs":
		spec["appProtocols"] = []any{"gateway.envoyproxy.io/h2c"}
		spec["tls"] = envoyBackendTLS(b)
	}
	return spec, nil
}

// envoyBackendTLS verifies the upstream against the system CAs unless the backend says not to
// (Envoy Gateway allows no CA setting beside insecureSkipVerify).
func envoyBackendTLS(b Backend) object {
	tls := object{"wellKnownCACertificates": "System"}
	if b.TLS != nil && b.TLS.InsecureSkipVerify {
		tls = object{"insecureSkipVerify": true}
	}
	if b.TLS != nil && b.TLS.SNI != "" {
		tls["sni"] = b.TLS.SNI
	}
	return tls
}

var gatewayPathTypes = map[string]string{"": "PathPrefix", "prefix": "PathPrefix", "exact": "Exact", "regex": "RegularExpression"}

func (r envoyRenderer) httpRouteSpec(s *Snapshot, svc APIService, route Route, policies routePolicies, gatewayName, pid string) (object, error) {
	pathType, ok := gatewayPathTypes[route.Matches.Path.Type]
	if !ok {
		return nil, fmt.Errorf("route %s: unsupported path match type %q", route.Name, route.Matches.Path.Type)
	}
	if err := checkRouteRegexes(route); err != nil {
		return nil, err
	}
	matches := gatewayMatches(route, pathType)

	if len(route.BackendRefs) == 0 {
		return nil, fmt.Errorf("route %s has no backend_refs", route.Name)
	}
	var refs []any
	for _, ref := range route.BackendRefs {
		b, err := resolveBackend(svc, ref)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", route.Name, err)
		}
		o := object{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": dnsName("imp", pid, svc.Name, b.Name)}
		if len(route.BackendRefs) > 1 {
			o["weight"] = ref.Weight
		}
		refs = append(refs, o)
	}
	rule := object{"matches": matches, "backendRefs": refs}
	timeouts := object{}
	if route.Timeouts.RequestMS > 0 {
		timeouts["request"] = strconv.Itoa(route.Timeouts.RequestMS) + "ms"
	}
	backendRequest := route.Timeouts.BackendRequestMS
	if first, err := resolveBackend(svc, route.BackendRefs[0]); err == nil && backendRequest == 0 &&
		(route.Timeouts.RequestMS == 0 || first.Timeouts.RequestMS <= route.Timeouts.RequestMS) {
		// The backend's own request timeout, where the route sets none (Gateway API wants it
		// no longer than the route's request timeout).
		backendRequest = first.Timeouts.RequestMS
	}
	if backendRequest > 0 {
		timeouts["backendRequest"] = strconv.Itoa(backendRequest) + "ms"
	}
	if len(timeouts) > 0 {
		rule["timeouts"] = timeouts
	}
	if filters := policies.envoyFilters(); len(filters) > 0 {
		rule["filters"] = filters
	}
	spec := object{"parentRefs": []any{object{"name": gatewayName}}, "rules": []any{rule}}
	if hosts := routeHostnames(s, route); len(hosts) > 0 {
		hs := make([]any, len(hosts))
		for i, h := range hosts {
			hs[i] = h
		}
		spec["hostnames"] = hs
	}
	return spec, nil
}

// gatewayMatches are a route's HTTPRoute matches. A Gateway API match holds one method, so a
// route with several becomes one match per method (matches of a rule are ORed).
func gatewayMatches(route Route, pathType string) []any {
	base := object{"path": object{"type": pathType, "value": firstNonEmpty(route.Matches.Path.Value, "/")}}
	if hs := gatewayValueMatches(route.Matches.Headers); len(hs) > 0 {
		base["headers"] = hs
	}
	if qs := gatewayValueMatches(route.Matches.QueryParams); len(qs) > 0 {
		base["queryParams"] = qs
	}
	if len(route.Matches.Methods) == 0 {
		return []any{base}
	}
	var matches []any
	for _, m := range route.Matches.Methods {
		mm := object{}
		for k, v := range base {
			mm[k] = v
		}
		mm["method"] = strings.ToUpper(m)
		matches = append(matches, mm)
	}
	return matches
}

// checkRouteRegexes refuses regexes outside the subset every data plane reads the same way (the
// API refuses them first; a snapshot is checked again because the gateway is shared).
func checkRouteRegexes(route Route) error {
	if route.Matches.Path.Type == "regex" {
		if err := saferegex.Check(route.Matches.Path.Value); err != nil {
			return fmt.Errorf("route %s: path regex %w", route.Name, err)
		}
	}
	for _, m := range append(append([]ValueMatch{}, route.Matches.Headers...), route.Matches.QueryParams...) {
		if m.Type == "RegularExpression" {
			if err := saferegex.Check(m.Value); err != nil {
				return fmt.Errorf("route %s: %s regex %w", route.Name, m.Name, err)
			}
		}
	}
	return nil
}

func gatewayValueMatches(ms []ValueMatch) []any {
	var out []any
	for _, m := range ms {
		switch m.Type {
		case "Present":
			// Gateway API has no presence match; any value is the same thing.
			out = append(out, object{"name": m.Name, "type": "RegularExpression", "value": ".*"})
		case "RegularExpression":
			out = append(out, object{"name": m.Name, "type": "RegularExpression", "value": m.Value})
		default:
			out = append(out, object{"name": m.Name, "type": "Exact", "value": m.Value})
		}
	}
	return out
}

// envoyFilters renders the route's header-modifier and url-rewrite policies as HTTPRoute
// filters, in that order.
func (ps routePolicies) envoyFilters() []any {
	var filters []any
	if p := ps.headerModifier; p != nil {
		filters = append(filters, p.envoy()...)
	}
	if p := ps.urlRewrite; p != nil {
		if f := p.envoy(); f != nil {
			filters = append(filters, f)
		}
	}
	return filters
}

// envoy renders a header-modifier policy as request and response header filters.
func (p *headerModifierPolicy) envoy() []any {
	var filters []any
	if ops := envoyHeaderOps(p.Request); ops != nil {
		filters = append(filters, object{"type": "RequestHeaderModifier", "requestHeaderModifier": ops})
	}
	if ops := envoyHeaderOps(p.Response); ops != nil {
		filters = append(filters, object{"type": "ResponseHeaderModifier", "responseHeaderModifier": ops})
	}
	return filters
}

// envoy renders a url-rewrite policy as a URLRewrite filter (nil when it rewrites nothing;
// check has refused a path type other than full and prefix).
func (p *urlRewritePolicy) envoy() object {
	rw := object{}
	if p.Hostname != "" {
		rw["hostname"] = p.Hostname
	}
	if p.Path != nil {
		if p.Path.Type == "full" {
			rw["path"] = object{"type": "ReplaceFullPath", "replaceFullPath": p.Path.Value}
		} else {
			rw["path"] = object{"type": "ReplacePrefixMatch", "replacePrefixMatch": p.Path.Value}
		}
	}
	if len(rw) == 0 {
		return nil
	}
	return object{"type": "URLRewrite", "urlRewrite": rw}
}

func envoyHeaderOps(ops *HeaderOps) object {
	if ops == nil {
		return nil
	}
	values := func(hs []HeaderValue) []any {
		out := make([]any, len(hs))
		for i, h := range hs {
			out[i] = object{"name": h.Name, "value": h.Value}
		}
		return out
	}
	o := object{}
	if len(ops.Add) > 0 {
		o["add"] = values(ops.Add)
	}
	if len(ops.Set) > 0 {
		o["set"] = values(ops.Set)
	}
	if len(ops.Remove) > 0 {
		o["remove"] = stringList(ops.Remove)
	}
	if len(o) == 0 {
		return nil
	}
	return o
}

func stringList(vals []string) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}

var envoyRateUnits = map[string]string{"second": "Second", "minute": "Minute", "hour": "Hour", "day": "Day"}

// envoyPolicies builds the BackendTrafficPolicy and SecurityPolicy specs of a route (either may
// be empty): its policies, what its first backend says, and the publish's credential check.
func (r envoyRenderer) envoyPolicies(s *Snapshot, svc APIService, route Route, ps routePolicies) (traffic, security object) {
	traffic, security = object{}, object{}
	if p := ps.rateLimit; p != nil {
		traffic["rateLimit"] = p.envoy()
	}
	if ps.retry != nil {
		traffic["retry"] = envoyRetry(*ps.retry)
	}
	timeout := object{}
	if ps.timeout != nil && ps.timeout.RequestMS > 0 {
		timeout["http"] = object{"requestTimeout": strconv.Itoa(ps.timeout.RequestMS) + "ms"}
	}
	if b, err := resolveBackend(svc, route.BackendRefs[0]); err == nil {
		envoyBackendTraffic(b, traffic, timeout)
	}
	if len(timeout) > 0 {
		traffic["timeout"] = timeout
	}

	if p := ps.cors; p != nil {
		security["cors"] = p.envoy()
	}
	if authz := ps.envoyAuthorization(); authz != nil {
		security["authorization"] = authz
	}
	if needsCredentialCheck(s) {
		security["extAuth"] = r.extAuth(s)
	}
	return traffic, security
}

// envoyBackendTraffic adds what a route's first backend decides to its traffic policy and
// timeouts: Envoy Gateway sets load balancing, health checks, circuit breaking and connection
// timeouts per route (BackendTrafficPolicy), not per Backend. The backend's own retry applies
// when the route has no retry policy.
func envoyBackendTraffic(b Backend, traffic, timeout object) {
	if lb := envoyLoadBalancer(b); lb != nil {
		traffic["loadBalancer"] = lb
	}
	if hc := envoyHealthCheck(b.HealthCheck); hc != nil {
		traffic["healthCheck"] = object{"active": hc}
	}
	if cb := envoyCircuitBreaker(b.CircuitBreaker); cb != nil {
		traffic["circuitBreaker"] = cb
	}
	if _, ok := traffic["retry"]; !ok && b.Retry != nil && b.Retry.NumRetries > 0 {
		traffic["retry"] = envoyRetry(*b.Retry)
	}
	if b.Timeouts.ConnectMS > 0 {
		timeout["tcp"] = object{"connectTimeout": strconv.Itoa(b.Timeouts.ConnectMS) + "ms"}
	}
	if b.Timeouts.IdleMS > 0 {
		h, _ := timeout["http"].(object)
		if h == nil {
			h = object{}
		}
		h["connectionIdleTimeout"] = strconv.Itoa(b.Timeouts.IdleMS) + "ms"
		timeout["http"] = h
	}
}

// envoy renders a rate-limit policy as a local rate limit.
func (p *rateLimitPolicy) envoy() object {
	return object{"type": "Local", "local": object{"rules": []any{
		object{"limit": object{"requests": p.RequestsPerUnit, "unit": envoyRateUnits[strings.ToLower(p.Unit)]}},
	}}}
}

// envoyAuthorization renders the ip-allow and ip-deny policies as a SecurityPolicy
// authorization (nil without either). Deny rules come first: an address both lists name is
// refused.
func (ps routePolicies) envoyAuthorization() object {
	allow, deny := ps.allowCIDRs(), ps.denyCIDRs()
	if len(allow) == 0 && len(deny) == 0 {
		return nil
	}
	var rules []any
	if len(deny) > 0 {
		rules = append(rules, object{"name": "ip-deny", "action": "Deny", "principal": object{"clientCIDRs": stringList(deny)}})
	}
	def := "Allow"
	if len(allow) > 0 {
		rules = append(rules, object{"name": "ip-allow", "action": "Allow", "principal": object{"clientCIDRs": stringList(allow)}})
		def = "Deny"
	}
	return object{"defaultAction": def, "rules": rules}
}

func envoyRetry(spec RetrySpec) object {
	retry := object{"numRetries": spec.NumRetries}
	if len(spec.RetryOn) > 0 {
		retry["retryOn"] = object{"triggers": stringList(spec.RetryOn)}
	}
	per := object{}
	if spec.PerTryTimeoutMS > 0 {
		per["timeout"] = strconv.Itoa(spec.PerTryTimeoutMS) + "ms"
	}
	if bo := spec.Backoff; bo != nil && bo.BaseIntervalMS > 0 {
		backOff := object{"baseInterval": strconv.Itoa(bo.BaseIntervalMS) + "ms"}
		if bo.MaxIntervalMS > 0 {
			backOff["maxInterval"] = strconv.Itoa(bo.MaxIntervalMS) + "ms"
		}
		per["backOff"] = backOff
	}
	if len(per) > 0 {
		retry["perRetry"] = per
	}
	return retry
}

func envoyLoadBalancer(b Backend) object {
	switch b.LBPolicy {
	case "", "RoundRobin":
		return nil
	case "ConsistentHash":
		ch := object{"type": "SourceIP"}
		if h := b.ConsistentHash; h != nil {
			switch h.Type {
			case "Header":
				ch = object{"type": "Header", "header": object{"name": h.HeaderName}}
			case "Cookie":
				if h.Cookie != nil {
					cookie := object{"name": h.Cookie.Name}
					if h.Cookie.TTLSeconds > 0 {
						cookie["ttl"] = strconv.Itoa(h.Cookie.TTLSeconds) + "s"
					}
					ch = object{"type": "Cookie", "cookie": cookie}
				}
			}
		}
		return object{"type": "ConsistentHash", "consistentHash": ch}
	default:
		return object{"type": b.LBPolicy}
	}
}

func envoyHealthCheck(hc *HealthCheck) object {
	if hc == nil {
		return nil
	}
	o := object{}
	switch strings.ToUpper(hc.Type) {
	case "TCP":
		o["type"], o["tcp"] = "TCP", object{}
	case "GRPC":
		o["type"], o["grpc"] = "GRPC", object{}
	default:
		o["type"], o["http"] = "HTTP", object{"path": firstNonEmpty(hc.Path, "/")}
	}
	if hc.IntervalMS > 0 {
		o["interval"] = strconv.Itoa(hc.IntervalMS) + "ms"
	}
	if hc.TimeoutMS > 0 {
		o["timeout"] = strconv.Itoa(hc.TimeoutMS) + "ms"
	}
	if hc.HealthyThreshold > 0 {
		o["healthyThreshold"] = hc.HealthyThreshold
	}
	if hc.UnhealthyThreshold > 0 {
		o["unhealthyThreshold"] = hc.UnhealthyThreshold
	}
	return o
}

func envoyCircuitBreaker(cb *CircuitBreaker) object {
	if cb == nil {
		return nil
	}
	o := object{}
	for k, v := range map[string]int{"maxConnections": cb.MaxConnections, "maxPendingRequests": cb.MaxPendingRequests,
		"maxParallelRequests": cb.MaxParallelRequests, "maxParallelRetries": cb.MaxParallelRetries} {
		if v > 0 {
			o[k] = v
		}
	}
	if len(o) == 0 {
		return nil
	}
	return o
}

// extAuth sends every request's credential headers to the agent's verifier: the agent holds
// only hashes of the secrets, which Envoy's built-in API key check cannot use.
func (r envoyRenderer) extAuth(s *Snapshot) object {
	u := strings.TrimRight(r.opts.VerifierURL, "/")
	service, namespace, port, path := splitServiceURL(u)
	ref := object{"name": service, "port": port}
	if namespace != "" && namespace != r.opts.Namespace {
		// Cross-namespace: the verifier's namespace needs a ReferenceGrant for this one.
		ref["namespace"] = namespace
	}
	return object{
		"http": object{
			"backendRefs":      []any{ref},
			"path":             path + "/" + s.PublishID,
			"headersToBackend": []any{"x-imprun-credential-id", "x-imprun-plan-id"},
		},
		"headersToExtAuth": []any{"authorization", "x-api-key"},
	}
}

// splitServiceURL splits "http://svc.ns.svc.cluster.local:8081/verify" into the Service name
// ("svc"), its namespace ("ns", empty when the host has no dot), port and path, which is how
// ext-auth refers to an in-cluster service.
func splitServiceURL(u string) (service, namespace string, port int, path string) {
	rest := u
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	hostport, path, _ := strings.Cut(rest, "/")
	path = "/" + path
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		host, p = hostport, "80"
	}
	port, _ = strconv.Atoi(p)
	service, rest, _ = strings.Cut(host, ".")
	namespace, _, _ = strings.Cut(rest, ".")
	return service, namespace, port, strings.TrimRight(path, "/")
}

// envoy renders a cors policy as a SecurityPolicy's cors.
func (p *corsPolicy) envoy() object {
	spec := p.CORSSpec
	list := func(vals []string) []any {
		out := make([]any, len(vals))
		for i, v := range vals {
			out[i] = v
		}
		return out
	}
	c := object{"allowOrigins": list(spec.AllowOrigins), "allowMethods": list(spec.AllowMethods)}
	if len(spec.AllowHeaders) > 0 {
		c["allowHeaders"] = list(spec.AllowHeaders)
	}
	if len(spec.ExposeHeaders) > 0 {
		c["exposeHeaders"] = list(spec.ExposeHeaders)
	}
	if spec.MaxAgeSeconds > 0 {
		c["maxAge"] = strconv.Itoa(spec.MaxAgeSeconds) + "s"
	}
	if spec.AllowCredentials {
		c["allowCredentials"] = true
	}
	return c
}

// RenderCredentials renders a Secret with one entry per credential that may call the publish:
// the verifier mounts it, operators can inspect it, and it holds hashes only.
func (r envoyRenderer) RenderCredentials(publishID string, creds []Credential) (string, []byte, error) {
	data := object{}
	for _, c := range creds {
		entry, err := json.Marshal(credentialEntry(publishID, c))
		if err != nil {
			return "", nil, err
		}
		data[c.ID] = string(entry)
	}
	obj := object{
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "Opaque",
		"metadata": object{
			"name":      dnsName("imp", shortID(publishID), "credentials"),
			"namespace": r.opts.Namespace,
			"labels": object{
				"app.kubernetes.io/managed-by": "imprun-agent",
				"imprun.dev/publish-id":        publishID,
			},
		},
		"stringData": data,
	}
	out, err := marshalYAML(obj)
	if err != nil {
		return "", nil, err
	}
	return "credentials.yaml", append([]byte("# Credential hashes for publish "+publishID+". Do not edit.\n"), out...), nil
}

// credentialEntry is what a rendered credential file says about one credential.
func credentialEntry(publishID string, c Credential) map[string]any {
	g, _ := c.grantFor(publishID)
	e := map[string]any{
		"type":        c.Type,
		"key_prefix":  c.KeyPrefix,
		"secret_hash": c.SecretHash,
		"version":     c.Version,
		"plan_id":     g.PlanID,
		"limits":      g.Limits,
	}
	if c.ExpiresAt != nil {
		e["expires_at"] = c.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z07:00")
	}
	return e
}
