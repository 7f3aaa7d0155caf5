package agent

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/imprun/imprun-server/saferegex"
)

// nginxRenderer renders an nginx.conf fragment meant to be included inside the http {} block:
// an upstream per backend, a server per listener and hostname, a location per route.
type nginxRenderer struct {
	opts RenderOptions
}

// certRef is what a TLS certificate reference may look like: a file name, never a path.
var certRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$`)

// nginxBlock is one rendered top-level block with the resource it stands for.
type nginxBlock struct {
	res  RenderedResource
	text string
}

// RenderPublish renders the upstreams, then the locations of every route grouped by hostname,
// then a server per listener and hostname, and writes them out with the http-context lines
// (zones) the locations need.
func (r nginxRenderer) RenderPublish(s *Snapshot) (*Rendered, error) {
	pid := shortID(s.PublishID)
	// Upstreams first: servers refer to them.
	blocks, upstreamOf, err := r.upstreams(s, pid)
	if err != nil {
		return nil, err
	}
	byHost, zones, err := r.locationsByHost(s, pid, upstreamOf)
	if err != nil {
		return nil, err
	}
	hosts := make([]string, 0, len(byHost))
	for h := range byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)

	var listens []ListenSocket
	for i, l := range s.Gateway.Listeners {
		lb, listen, err := r.listenerServers(s, i, l, hosts, byHost)
		if err != nil {
			return nil, err
		}
		if len(lb) > 0 {
			listens = appendListen(listens, listen)
		}
		blocks = append(blocks, lb...)
	}

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Rendered by imprun-agent for publish %s revision %d. Include inside http {}. Do not edit.\n", s.PublishID, s.Revision)
	for _, z := range zones {
		buf.WriteString(z)
	}
	out := &Rendered{FileExt: "conf", Listens: listens}
	for _, b := range blocks {
		if b.text != "" {
			buf.WriteString("\n")
			buf.WriteString(b.text)
			b.res.Hash = hashText([]byte(b.text))
		}
		out.Resources = append(out.Resources, b.res)
	}
	out.Config = buf.Bytes()
	return out, nil
}

// upstreams renders an upstream per backend (after checking its endpoints against the egress
// policy) and names each by service and backend id.
func (r nginxRenderer) upstreams(s *Snapshot, pid string) (blocks []nginxBlock, upstreamOf map[string]string, err error) {
	upstreamOf = map[string]string{} // service id + "/" + backend id -> upstream name
	for _, svc := range s.APIServices {
		for _, b := range svc.Backends {
			name := nginxName("imp", pid, svc.Name, b.Name)
			if err := checkEgress(r.opts.Egress, svc, b); err != nil {
				return nil, nil, err
			}
			text, err := nginxUpstream(name, svc, b)
			if err != nil {
				return nil, nil, err
			}
			upstreamOf[svc.ID+"/"+b.ID] = name
			blocks = append(blocks, nginxBlock{RenderedResource{Kind: "NginxUpstream", Name: name}, text})
		}
	}
	return blocks, upstreamOf, nil
}

// nginxLocation is one rendered route location.
type nginxLocation struct {
	res  RenderedResource
	path string // location operator and value: two equal ones would clash in one server
	text string
}

// locationsByHost renders every route's location under each hostname it answers on; a route
// without hostnames answers on the publish hostname, or on any name ("_") when the publish has
// none either. zones are the http-context lines of the locations, in route order.
func (r nginxRenderer) locationsByHost(s *Snapshot, pid string, upstreamOf map[string]string) (byHost map[string][]nginxLocation, zones []string, err error) {
	byHost = map[string][]nginxLocation{}
	for _, svc := range s.APIServices {
		for _, route := range svc.Routes {
			name := nginxName("imp", pid, svc.Name, route.Name)
			text, path, zone, err := r.location(s, svc, route, name, upstreamOf)
			if err != nil {
				return nil, nil, err
			}
			if zone != "" {
				zones = append(zones, zone)
			}
			hosts := routeHostnames(s, route)
			if len(hosts) == 0 {
				hosts = []string{"_"}
			}
			for _, h := range hosts {
				res := RenderedResource{Kind: "NginxLocation", Name: h + firstNonEmpty(route.Matches.Path.Value, "/")}
				byHost[h] = append(byHost[h], nginxLocation{res, path, text})
			}
		}
	}
	return byHost, zones, nil
}

// listenerServers renders listener l's server blocks, one per hostname it serves (a listener
// bound to a hostname serves only that one), each followed by the resources of its locations,
// and the socket they listen on.
func (r nginxRenderer) listenerServers(s *Snapshot, i int, l Listener, hosts []string, byHost map[string][]nginxLocation) ([]nginxBlock, ListenSocket, error) {
	if l.Port < 1 || l.Port > 65535 {
		return nil, ListenSocket{}, fmt.Errorf("listener %q: port %d out of range", l.Name, l.Port)
	}
	addr, err := r.listenAddr(l.Port)
	if err != nil {
		return nil, ListenSocket{}, fmt.Errorf("listener %q: %w", l.Name, err)
	}
	listen := ListenSocket{Addr: addr}
	switch protocol := strings.ToUpper(firstNonEmpty(l.Protocol, "HTTP")); protocol {
	case "HTTP":
	case "HTTPS":
		listen.SSL = true
	default:
		// TCP/TLS passthrough listeners belong to nginx's stream {} context, which an
		// http {} fragment cannot hold.
		return nil, ListenSocket{}, fmt.Errorf("listener %q: protocol %s is not supported by the nginx renderer", l.Name, protocol)
	}
	listenerName := firstNonEmpty(l.Name, "listener-"+strconv.Itoa(i))
	var blocks []nginxBlock
	for _, h := range hosts {
		if l.Hostname != "" && h != l.Hostname {
			continue
		}
		text, err := r.server(s, l, listen, h, byHost[h])
		if err != nil {
			return nil, ListenSocket{}, err
		}
		blocks = append(blocks, nginxBlock{RenderedResource{Kind: "NginxServer", Name: listenerName + ":" + h}, text})
		for _, lc := range byHost[h] {
			lc.res.Name = listenerName + ":" + lc.res.Name
			lc.res.Hash = hashText([]byte(lc.text))
			blocks = append(blocks, nginxBlock{res: lc.res})
		}
	}
	return blocks, listen, nil
}

// server renders the server block of one listener and hostname: its certificate, its
// locations, the verifier's location when the publish checks credentials, and the locations
// that refuse everything else.
func (r nginxRenderer) server(s *Snapshot, l Listener, listen ListenSocket, host string, locations []nginxLocation) (string, error) {
	var b strings.Builder
	directive := listen.Addr
	if listen.SSL {
		directive += " ssl"
	}
	fmt.Fprintf(&b, "server {\n    listen %s;\n    server_name %s;\n", directive, host)
	if listen.SSL && l.TLS != nil && l.TLS.CertificateRef != "" {
		text, err := r.certificate(s, l)
		if err != nil {
			return "", err
		}
		b.WriteString(text)
	}
	seen := map[string]bool{}
	for _, lc := range locations {
		if seen[lc.path] {
			return "", fmt.Errorf("two routes on host %s match the same location %q", host, lc.path)
		}
		seen[lc.path] = true
		b.WriteString(lc.text)
	}
	if needsCredentialCheck(s) {
		b.WriteString(r.verifyLocation(s))
	}
	b.WriteString(nginxDenyLocations(needsCredentialCheck(s)))
	b.WriteString("}\n")
	return b.String(), nil
}

// certificate renders the certificate lines of a TLS listener. The certificate reference names
// files the operator provisions: <ref>.crt and <ref>.key in NginxCertDir (next to this
// fragment without one).
func (r nginxRenderer) certificate(s *Snapshot, l Listener) (string, error) {
	ref := l.TLS.CertificateRef
	if !certRef.MatchString(ref) || strings.Contains(ref, "..") {
		return "", fmt.Errorf("listener %q: certificate_ref %q is not a plain name", l.Name, ref)
	}
	if r.opts.NginxCertDir != "" {
		if !safeNginxValue(r.opts.NginxCertDir) {
			return "", fmt.Errorf("certificate directory %q cannot be rendered for nginx", r.opts.NginxCertDir)
		}
		// Each tenant's certificates live in a directory of its own: a tenant can name only
		// its own (snapshots from before tenant_id use the flat layout).
		dir := strings.TrimRight(r.opts.NginxCertDir, "/")
		if s.TenantID != "" {
			if !safeID.MatchString(s.TenantID) {
				return "", fmt.Errorf("tenant_id %q is not a valid id", s.TenantID)
			}
			dir += "/" + s.TenantID
		}
		ref = dir + "/" + ref
	}
	return fmt.Sprintf("    ssl_certificate %s.crt;\n    ssl_certificate_key %s.key;\n", ref, ref), nil
}

var nginxLBDirectives = map[string]string{
	"":             "",
	"RoundRobin":   "",
	"LeastRequest": "    least_conn;\n",
	"Random":       "    random;\n",
}

// nginxUpstream renders a backend as an upstream block. Open-source nginx has no active health
// checks: a health check becomes passive ejection (unhealthy_threshold failures within the
// interval take a server out for the interval), and a circuit breaker's max_connections caps
// each server.
func nginxUpstream(name string, svc APIService, b Backend) (string, error) {
	if len(b.Endpoints) == 0 {
		return "", fmt.Errorf("service %s backend %s has no endpoints", svc.Name, b.Name)
	}
	lb, ok := nginxLBDirectives[b.LBPolicy]
	if b.LBPolicy == "ConsistentHash" {
		key, err := nginxHashKey(b.ConsistentHash)
		if err != nil {
			return "", fmt.Errorf("service %s backend %s: %w", svc.Name, b.Name, err)
		}
		lb, ok = "    hash "+key+" consistent;\n", true
	}
	if !ok {
		return "", fmt.Errorf("service %s backend %s: unsupported lb_policy %q", svc.Name, b.Name, b.LBPolicy)
	}
	var params string
	if hc := b.HealthCheck; hc != nil && hc.UnhealthyThreshold > 0 {
		params += fmt.Sprintf(" max_fails=%d", hc.UnhealthyThreshold)
		if hc.IntervalMS > 0 {
			params += fmt.Sprintf(" fail_timeout=%ds", (hc.IntervalMS+999)/1000)
		}
	}
	if cb := b.CircuitBreaker; cb != nil && cb.MaxConnections > 0 {
		params += fmt.Sprintf(" max_conns=%d", cb.MaxConnections)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "upstream %s {\n%s", name, lb)
	for _, ep := range b.Endpoints {
		if !safeNginxToken(ep.Host) || ep.Port < 1 || ep.Port > 65535 {
			return "", fmt.Errorf("service %s backend %s: bad endpoint %s:%d", svc.Name, b.Name, ep.Host, ep.Port)
		}
		fmt.Fprintf(&sb, "    server %s", net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)))
		if ep.Weight > 1 {
			fmt.Fprintf(&sb, " weight=%d", ep.Weight)
		}
		sb.WriteString(params)
		sb.WriteString(";\n")
	}
	sb.WriteString("}\n")
	return sb.String(), nil
}

// nginxHashKey is the hash key of a ConsistentHash backend.
func nginxHashKey(h *ConsistentHash) (string, error) {
	if h == nil {
		return "$remote_addr", nil
	}
	switch h.Type {
	case "", "SourceIP":
		return "$remote_addr", nil
	case "Header":
		v, err := nginxVariable("$http_", h.HeaderName)
		if err != nil {
			return "", fmt.Errorf("consistent hash header %w", err)
		}
		return v, nil
	case "Cookie":
		if h.Cookie == nil {
			return "", fmt.Errorf("consistent hash on a cookie names no cookie")
		}
		// $cookie_NAME takes the name as it is: only names nginx variables can hold.
		for _, c := range h.Cookie.Name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') || h.Cookie.Name == "" {
				return "", fmt.Errorf("consistent hash cookie %q cannot be rendered for nginx", h.Cookie.Name)
			}
		}
		return "$cookie_" + h.Cookie.Name, nil
	}
	return "", fmt.Errorf("unsupported consistent hash type %q", h.Type)
}

// location renders one route. It returns the location text, its match ("^~ /v1"), and the
// http-context lines it needs (split_clients, map, limit_req_zone), if any. The steps: the
// path match, the proxy target, the request guards (methods, headers, query parameters, the
// credential check), the route's policies, then timeouts, upstream TLS and proxy_pass.
func (r nginxRenderer) location(s *Snapshot, svc APIService, route Route, name string, upstreamOf map[string]string) (text, path, zone string, err error) {
	path, err = nginxLocationMatch(route)
	if err != nil {
		return "", "", "", err
	}
	target, err := nginxProxyTarget(svc, route, name, upstreamOf)
	if err != nil {
		return "", "", "", err
	}
	zone = target.zone

	var b strings.Builder
	fmt.Fprintf(&b, "    # route %s (service %s)\n    location %s {\n", route.Name, svc.Name, path)
	policies, err := decodeRoutePolicies(svc, route)
	if err != nil {
		return "", "", "", err
	}
	// A CORS preflight is answered here, before the header guards, the method limit and the
	// credential check: browsers send it without credentials (the add_header lines below
	// carry the CORS headers into the 204).
	if policies.cors != nil {
		b.WriteString("        if ($request_method = OPTIONS) { return 204; }\n")
	}
	guards, err := nginxGuards(route)
	if err != nil {
		return "", "", "", err
	}
	b.WriteString(guards)
	b.WriteString(nginxAuth(needsCredentialCheck(s)))
	first, err := resolveBackend(svc, route.BackendRefs[0])
	if err != nil {
		return "", "", "", fmt.Errorf("route %s: %w", route.Name, err)
	}
	policyZone, policyText, err := policies.nginx(name, route, first)
	if err != nil {
		return "", "", "", err
	}
	zone += policyZone
	b.WriteString(policyText)
	b.WriteString(nginxTimeouts(route, first, policies.timeout))
	if target.tlsBackend != nil {
		text, err := r.upstreamTLS(*target.tlsBackend)
		if err != nil {
			return "", "", "", fmt.Errorf("route %s: %w", route.Name, err)
		}
		b.WriteString(text)
	}
	fmt.Fprintf(&b, "        proxy_pass %s;\n    }\n", target.proxyPass)
	return b.String(), path, zone, nil
}

// nginxLocationMatch is the location's operator and value for the route's path match.
func nginxLocationMatch(route Route) (string, error) {
	value := firstNonEmpty(route.Matches.Path.Value, "/")
	switch route.Matches.Path.Type {
	case "", "prefix", "exact":
		if !safeNginxValue(value) {
			return "", fmt.Errorf("route %s: path %q cannot be rendered for nginx", route.Name, value)
		}
		if route.Matches.Path.Type == "exact" {
			return "= " + value, nil
		}
		// ^~ keeps a prefix route from being taken over by a regex route of another service.
		return "^~ " + value, nil
	case "regex":
		if err := saferegex.Check(value); err != nil {
			return "", fmt.Errorf("route %s: path regex %w", route.Name, err)
		}
		return "~ " + nginxQuote(value), nil
	default:
		return "", fmt.Errorf("route %s: unsupported path match type %q", route.Name, route.Matches.Path.Type)
	}
}

// nginxTarget is where a location proxies to.
type nginxTarget struct {
	proxyPass  string   // an upstream URL, or the split_clients variable of a weighted split
	zone       string   // the split_clients block, if any
	tlsBackend *Backend // the https backend whose TLS settings the location carries
}

// nginxProxyTarget resolves a route's backends to its proxy_pass target. proxy_pass takes the
// scheme of the backend; a weighted split picks scheme and upstream together per request (a
// split_clients map), so an http and an https backend can share a route.
func nginxProxyTarget(svc APIService, route Route, name string, upstreamOf map[string]string) (nginxTarget, error) {
	if len(route.BackendRefs) == 0 {
		return nginxTarget{}, fmt.Errorf("route %s has no backend_refs", route.Name)
	}
	url := func(b Backend) string {
		scheme := "http"
		if b.Scheme == "https" || b.Scheme == "grpcs" {
			scheme = "https"
		}
		return scheme + "://" + upstreamOf[svc.ID+"/"+b.ID]
	}
	var t nginxTarget
	var weighted []Backend
	var weights []int
	total := 0
	for _, ref := range route.BackendRefs {
		b, err := resolveBackend(svc, ref)
		if err != nil {
			return nginxTarget{}, fmt.Errorf("route %s: %w", route.Name, err)
		}
		if t.tlsBackend == nil && (b.Scheme == "https" || b.Scheme == "grpcs") {
			t.tlsBackend = &b
		}
		if len(route.BackendRefs) == 1 {
			t.proxyPass = url(b)
		} else if ref.Weight > 0 {
			weighted, weights, total = append(weighted, b), append(weights, ref.Weight), total+ref.Weight
		}
	}
	if len(route.BackendRefs) == 1 {
		return t, nil
	}
	if total <= 0 {
		return nginxTarget{}, fmt.Errorf("route %s: backend weights add up to %d", route.Name, total)
	}
	var sb strings.Builder
	t.proxyPass = "$" + name + "_upstream"
	fmt.Fprintf(&sb, "split_clients \"${request_id}\" %s {\n", t.proxyPass)
	for i, b := range weighted {
		if i == len(weighted)-1 {
			fmt.Fprintf(&sb, "    * %s;\n", url(b))
			break
		}
		// nginx refuses a 0.00% entry; a share that small still gets the least it can.
		fmt.Fprintf(&sb, "    %.2f%% %s;\n", max(float64(weights[i])*100/float64(total), 0.01), url(b))
	}
	sb.WriteString("}\n")
	t.zone = sb.String()
	return t, nil
}

// nginxGuards renders a route's method, header and query matches. nginx cannot select a
// location on headers or query parameters, but it can refuse requests that do not match, so
// the route never takes more than it should.
func nginxGuards(route Route) (string, error) {
	var b strings.Builder
	if len(route.Matches.Methods) > 0 {
		methods := make([]string, len(route.Matches.Methods))
		for i, m := range route.Matches.Methods {
			methods[i] = strings.ToUpper(m)
		}
		fmt.Fprintf(&b, "        limit_except %s { deny all; }\n", strings.Join(methods, " "))
	}
	for _, m := range route.Matches.Headers {
		g, err := nginxGuard("$http_", m)
		if err != nil {
			return "", fmt.Errorf("route %s: header %w", route.Name, err)
		}
		b.WriteString(g)
	}
	for _, m := range route.Matches.QueryParams {
		g, err := nginxGuard("$arg_", m)
		if err != nil {
			return "", fmt.Errorf("route %s: query parameter %w", route.Name, err)
		}
		b.WriteString(g)
	}
	return b.String(), nil
}

// nginx renders a route's policies into the location (text) and the http context (zone), in
// the order of their types: cors, header-modifier, rate-limit and url-rewrite directives, then
// the address rules and the retry (the route's retry policy, else its first backend's).
func (ps routePolicies) nginx(name string, route Route, first Backend) (zone, text string, err error) {
	var b strings.Builder
	if p := ps.cors; p != nil {
		z, t, err := p.nginx(name)
		if err != nil {
			return "", "", err
		}
		zone += z
		b.WriteString(t)
	}
	if p := ps.headerModifier; p != nil {
		t, err := p.nginx()
		if err != nil {
			return "", "", fmt.Errorf("policy %s: %w", p.id, err)
		}
		b.WriteString(t)
	}
	if p := ps.rateLimit; p != nil {
		z, t := p.nginx(name + "_rl")
		zone += z
		b.WriteString(t)
	}
	if p := ps.urlRewrite; p != nil {
		t, err := p.nginx(route)
		if err != nil {
			return "", "", fmt.Errorf("policy %s: %w", p.id, err)
		}
		b.WriteString(t)
	}
	// nginx checks deny and allow in order: denied addresses first, then the allowed ones,
	// then nobody else.
	for _, c := range ps.denyCIDRs() {
		fmt.Fprintf(&b, "        deny %s;\n", c)
	}
	for _, c := range ps.allowCIDRs() {
		fmt.Fprintf(&b, "        allow %s;\n", c)
	}
	if len(ps.allowCIDRs()) > 0 {
		b.WriteString("        deny all;\n")
	}
	retry := first.Retry
	if ps.retry != nil {
		retry = ps.retry
	}
	if retry != nil && retry.NumRetries > 0 {
		fmt.Fprintf(&b, "        proxy_next_upstream %s;\n        proxy_next_upstream_tries %d;\n", nginxRetryOn(retry.RetryOn), retry.NumRetries+1)
	}
	return zone, b.String(), nil
}

// nginxTimeouts bounds the wait for the backend's response (nginx cannot bound the request end
// to end): the route's request timeout, else the timeout policy's, else a backend request
// timeout; and the connect to the route's first backend.
func nginxTimeouts(route Route, first Backend, policy *TimeoutSpec) string {
	var pt TimeoutSpec
	if policy != nil {
		pt = *policy
	}
	var b strings.Builder
	readTimeoutMS := route.Timeouts.RequestMS
	if readTimeoutMS == 0 {
		readTimeoutMS = firstPositive(pt.RequestMS, route.Timeouts.BackendRequestMS, pt.BackendRequestMS, first.Timeouts.RequestMS)
	}
	if readTimeoutMS > 0 {
		fmt.Fprintf(&b, "        proxy_read_timeout %dms;\n", readTimeoutMS)
	}
	if first.Timeouts.ConnectMS > 0 {
		fmt.Fprintf(&b, "        proxy_connect_timeout %dms;\n", first.Timeouts.ConnectMS)
	}
	return b.String()
}

// nginx renders a rate-limit policy as a limit_req zone (http context) and its use. nginx's
// default for a refused request is 503; a client over a limit gets 429.
func (p *rateLimitPolicy) nginx(zoneName string) (zone, text string) {
	zone = fmt.Sprintf("limit_req_zone $binary_remote_addr zone=%s:10m rate=%s;\n", zoneName, p.nginxRate())
	text = fmt.Sprintf("        limit_req zone=%s", zoneName)
	if p.Burst > 0 {
		text += fmt.Sprintf(" burst=%d nodelay", p.Burst)
	}
	text += ";\n        limit_req_status 429;\n        error_page 429 = @imprun_limited;\n"
	return zone, text
}

// nginxRate is the policy's rate in nginx's r/s or r/m (nginx knows no larger unit; hour and
// day limits become the equivalent per-minute rate, rounded up so nobody gets less).
func (p *rateLimitPolicy) nginxRate() string {
	n := p.RequestsPerUnit
	switch strings.ToLower(p.Unit) {
	case "second":
		return fmt.Sprintf("%dr/s", n)
	case "hour":
		return fmt.Sprintf("%dr/m", (n+59)/60)
	case "day":
		return fmt.Sprintf("%dr/m", (n+1439)/1440)
	default: // minute (check allows nothing else)
		return fmt.Sprintf("%dr/m", n)
	}
}

// nginx renders a cors policy as response headers; several allowed origins need a map in the
// http context (zone) that echoes the request's Origin when it is one of them.
func (p *corsPolicy) nginx(name string) (zone, text string, err error) {
	for _, v := range append(append(append([]string{}, p.AllowOrigins...), p.AllowMethods...), p.AllowHeaders...) {
		if !nginxLiteral(v) {
			return "", "", fmt.Errorf("policy %s: value %q cannot be rendered for nginx", p.id, v)
		}
	}
	var b strings.Builder
	if len(p.AllowOrigins) == 1 || slices.Contains(p.AllowOrigins, "*") {
		origin := "*"
		if !slices.Contains(p.AllowOrigins, "*") {
			origin = p.AllowOrigins[0]
		}
		fmt.Fprintf(&b, "        add_header Access-Control-Allow-Origin %s always;\n", nginxQuote(origin))
	} else if len(p.AllowOrigins) > 1 {
		// The header names one origin (an empty value leaves the header out).
		originVar := "$" + name + "_cors_origin"
		var m strings.Builder
		fmt.Fprintf(&m, "map $http_origin %s {\n    default \"\";\n", originVar)
		for _, o := range p.AllowOrigins {
			if strings.HasPrefix(o, "~") {
				return "", "", fmt.Errorf("policy %s: origin %q cannot be rendered for nginx", p.id, o)
			}
			fmt.Fprintf(&m, "    %s $http_origin;\n", nginxQuote(o))
		}
		m.WriteString("}\n")
		zone = m.String()
		fmt.Fprintf(&b, "        add_header Access-Control-Allow-Origin %s always;\n        add_header Vary Origin always;\n", originVar)
	}
	fmt.Fprintf(&b, "        add_header Access-Control-Allow-Methods %s always;\n", nginxQuote(strings.Join(p.AllowMethods, ", ")))
	if len(p.AllowHeaders) > 0 {
		fmt.Fprintf(&b, "        add_header Access-Control-Allow-Headers %s always;\n", nginxQuote(strings.Join(p.AllowHeaders, ", ")))
	}
	if p.AllowCredentials {
		b.WriteString("        add_header Access-Control-Allow-Credentials true always;\n")
	}
	if len(p.ExposeHeaders) > 0 {
		fmt.Fprintf(&b, "        add_header Access-Control-Expose-Headers %s always;\n", nginxQuote(strings.Join(p.ExposeHeaders, ", ")))
	}
	if p.MaxAgeSeconds > 0 {
		fmt.Fprintf(&b, "        add_header Access-Control-Max-Age %d always;\n", p.MaxAgeSeconds)
	}
	return zone, b.String(), nil
}

// upstreamTLS verifies an https backend like Envoy Gateway does (system CAs, unless the
// backend says not to) against its SNI name or, without one, its first endpoint's host, and
// sends that name in SNI: nginx would otherwise send, and check the certificate against, the
// upstream block's name.
func (r nginxRenderer) upstreamTLS(b Backend) (string, error) {
	name := b.Endpoints[0].Host
	if b.TLS != nil && b.TLS.SNI != "" {
		name = b.TLS.SNI
	}
	if !safeNginxToken(name) {
		return "", fmt.Errorf("backend %s: server name %q cannot be rendered for nginx", b.Name, name)
	}
	var sb strings.Builder
	if net.ParseIP(name) == nil {
		sb.WriteString("        proxy_ssl_server_name on;\n") // SNI carries host names only
	}
	fmt.Fprintf(&sb, "        proxy_ssl_name %s;\n", name)
	if b.TLS != nil && b.TLS.InsecureSkipVerify {
		sb.WriteString("        proxy_ssl_verify off;\n")
	} else {
		if !safeNginxValue(r.opts.NginxTrustedCA) {
			return "", fmt.Errorf("trusted CA path %q cannot be rendered for nginx", r.opts.NginxTrustedCA)
		}
		fmt.Fprintf(&sb, "        proxy_ssl_verify on;\n        proxy_ssl_trusted_certificate %s;\n", r.opts.NginxTrustedCA)
	}
	return sb.String(), nil
}

// nginxRetryOn maps retry triggers to proxy_next_upstream conditions; triggers nginx cannot
// tell apart (gRPC statuses, 409) fall back to its default, connection errors and timeouts.
func nginxRetryOn(on []string) string {
	conds := map[string]bool{}
	for _, t := range on {
		switch t {
		case "5xx": // as Envoy's: any 5xx, and no response at all
			conds["error"], conds["timeout"] = true, true
			conds["http_500"], conds["http_502"], conds["http_503"], conds["http_504"] = true, true, true, true
		case "gateway-error":
			conds["http_502"], conds["http_503"], conds["http_504"] = true, true, true
		case "reset", "refused-stream":
			conds["error"] = true
		case "connect-failure":
			conds["error"], conds["timeout"] = true, true
		}
	}
	if len(conds) == 0 {
		conds["error"], conds["timeout"] = true, true
	}
	// nginx's own order: error, timeout, then the status codes.
	var out []string
	for _, c := range []string{"error", "timeout", "http_500", "http_502", "http_503", "http_504"} {
		if conds[c] {
			out = append(out, c)
		}
	}
	return strings.Join(out, " ")
}

// nginx renders a header-modifier policy. nginx cannot append to a request header, so add and
// set both replace it; removing one sends it empty, which nginx leaves out.
func (p *headerModifierPolicy) nginx() (string, error) {
	var b strings.Builder
	check := func(h HeaderValue) error {
		if !safeHeaderName(h.Name) {
			return fmt.Errorf("header name %q cannot be rendered for nginx", h.Name)
		}
		if !nginxLiteral(h.Value) {
			return fmt.Errorf("header %s: value %q cannot be rendered for nginx", h.Name, h.Value)
		}
		return nil
	}
	if ops := p.Request; ops != nil {
		for _, h := range append(append([]HeaderValue{}, ops.Set...), ops.Add...) {
			if err := check(h); err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "        proxy_set_header %s %s;\n", h.Name, nginxQuote(h.Value))
		}
		for _, n := range ops.Remove {
			if !safeHeaderName(n) {
				return "", fmt.Errorf("header name %q cannot be rendered for nginx", n)
			}
			fmt.Fprintf(&b, "        proxy_set_header %s \"\";\n", n)
		}
	}
	if ops := p.Response; ops != nil {
		for _, h := range ops.Set {
			if err := check(h); err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "        proxy_hide_header %s;\n        add_header %s %s always;\n", h.Name, h.Name, nginxQuote(h.Value))
		}
		for _, h := range ops.Add {
			if err := check(h); err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "        add_header %s %s always;\n", h.Name, nginxQuote(h.Value))
		}
		for _, n := range ops.Remove {
			if !safeHeaderName(n) {
				return "", fmt.Errorf("header name %q cannot be rendered for nginx", n)
			}
			fmt.Fprintf(&b, "        proxy_hide_header %s;\n", n)
		}
	}
	return b.String(), nil
}

// nginx renders a url-rewrite policy: the host header and/or the path (the whole of it, or the
// route's prefix; check has refused any other).
func (p *urlRewritePolicy) nginx(route Route) (string, error) {
	var b strings.Builder
	if p.Hostname != "" {
		if !safeNginxToken(p.Hostname) {
			return "", fmt.Errorf("hostname %q cannot be rendered for nginx", p.Hostname)
		}
		fmt.Fprintf(&b, "        proxy_set_header Host %s;\n", p.Hostname)
	}
	if p.Path == nil {
		return b.String(), nil
	}
	value := p.Path.Value
	if !strings.HasPrefix(value, "/") || !nginxLiteral(value) {
		return "", fmt.Errorf("rewrite path %q cannot be rendered for nginx", value)
	}
	if p.Path.Type == "full" {
		fmt.Fprintf(&b, "        rewrite ^ %s break;\n", nginxQuote(value))
		return b.String(), nil
	}
	// As Gateway API's ReplacePrefixMatch: /v1/charges/x with prefix /v1/charges replaced by
	// /api gives /api/x, and by / gives /x.
	prefix := regexp.QuoteMeta(strings.TrimRight(firstNonEmpty(route.Matches.Path.Value, "/"), "/"))
	repl := strings.TrimRight(value, "/")
	fmt.Fprintf(&b, "        rewrite %s %s break;\n", nginxQuote("^"+prefix+"(/.*)$"), nginxQuote(repl+"$1"))
	fmt.Fprintf(&b, "        rewrite %s %s break;\n", nginxQuote("^"+prefix+"$"), nginxQuote(firstNonEmpty(repl, "/")))
	return b.String(), nil
}

// safeHeaderName accepts HTTP header names (RFC 9110 tokens without the characters nginx
// would read as syntax).
func safeHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_!#%&*+.^|~", c)) {
			return false
		}
	}
	return true
}

func firstPositive(vals ...int) int {
	for _, v := range vals {
		if v > 0 {
			return v
		}
	}
	return 0
}

// nginxVariable is the variable nginx keeps a header ($http_) or query parameter ($arg_) in.
func nginxVariable(prefix, name string) (string, error) {
	v := strings.ToLower(strings.ReplaceAll(name, "-", "_"))
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "", fmt.Errorf("%q cannot be rendered for nginx", name)
		}
	}
	if v == "" {
		return "", fmt.Errorf("name is empty")
	}
	return prefix + v, nil
}

// nginxGuard renders a header or query match as an if that refuses non-matching requests.
func nginxGuard(varPrefix string, m ValueMatch) (string, error) {
	variable, err := nginxVariable(varPrefix, m.Name)
	if err != nil {
		return "", err
	}
	switch m.Type {
	case "Present":
		return fmt.Sprintf("        if (%s = \"\") { return 404; }\n", variable), nil
	case "RegularExpression":
		if err := saferegex.Check(m.Value); err != nil {
			return "", fmt.Errorf("%s: regex %w", m.Name, err)
		}
		return fmt.Sprintf("        if (%s !~ %s) { return 404; }\n", variable, nginxQuote(m.Value)), nil
	default:
		if !nginxLiteral(m.Value) {
			return "", fmt.Errorf("%s: value %q cannot be rendered for nginx", m.Name, m.Value)
		}
		return fmt.Sprintf("        if (%s != %s) { return 404; }\n", variable, nginxQuote(m.Value)), nil
	}
}

// verifyLocation is the internal location auth_request calls: the agent's verifier decides. It
// asks in auth_request mode (X-Imprun-Auth-Request), in which the verifier answers a refusal
// over a limit with 403 and X-Imprun-Status: 429, because auth_request turns any status but
// 2xx, 401 and 403 into a 500.
func (r nginxRenderer) verifyLocation(s *Snapshot) string {
	return fmt.Sprintf(`    location = /_imprun_verify {
        internal;
        proxy_pass %s/%s;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Imprun-Auth-Request nginx;
        proxy_connect_timeout 2s;
        proxy_read_timeout 5s;
    }
`, strings.TrimRight(r.opts.VerifierURL, "/"), s.PublishID)
}

// imprunHeaders are the request headers the gateway sets for the backend. Whatever a client
// sent under these names is replaced (an empty value sends nothing); with the headers-more
// module the agent's main configuration also clears every other X-Imprun-* header.
var imprunHeaders = []struct{ name, variable string }{
	{"X-Imprun-Credential-Id", "$imprun_credential_id"},
	{"X-Imprun-Plan-Id", "$imprun_plan_id"},
	{"X-Imprun-Status", ""},
	{"X-Imprun-Deny-Reason", ""},
	{"X-Imprun-Auth-Request", ""},
}

// nginxAuth renders a route's credential check and the headers it passes on.
func nginxAuth(check bool) string {
	var b strings.Builder
	if check {
		b.WriteString(`        auth_request /_imprun_verify;
        auth_request_set $imprun_status $upstream_http_x_imprun_status;
        auth_request_set $imprun_deny_reason $upstream_http_x_imprun_deny_reason;
        auth_request_set $imprun_retry_after $upstream_http_retry_after;
        auth_request_set $imprun_credential_id $upstream_http_x_imprun_credential_id;
        auth_request_set $imprun_plan_id $upstream_http_x_imprun_plan_id;
        error_page 401 = @imprun_unauthorized;
        error_page 403 = @imprun_forbidden;
        error_page 500 = @imprun_unavailable;
`)
	}
	for _, h := range imprunHeaders {
		v := `""`
		if check && h.variable != "" {
			v = h.variable
		}
		fmt.Fprintf(&b, "        proxy_set_header %s %s;\n", h.name, v)
	}
	return b.String()
}

// nginxDenyLocations are the named locations a server's refusals go to: a JSON body, the
// verifier's reason, and Retry-After over a limit. A credential check that cannot reach the
// verifier (the agent is down) is 503 with Retry-After, never a 500 and never an open door.
func nginxDenyLocations(check bool) string {
	limited := `    location @imprun_limited {
        default_type application/json;
        add_header Retry-After 1 always;
        return 429 '{"error":"rate_limited","reason":"rate_limit_policy"}\n';
    }
`
	if !check {
		return limited
	}
	return limited + `    location @imprun_unauthorized {
        default_type application/json;
        add_header WWW-Authenticate 'ApiKey realm="imprun", Basic realm="imprun"' always;
        add_header X-Imprun-Deny-Reason $imprun_deny_reason always;
        return 401 '{"error":"unauthorized","reason":"$imprun_deny_reason"}\n';
    }
    location @imprun_forbidden {
        default_type application/json;
        if ($imprun_status = 429) {
            add_header Retry-After $imprun_retry_after always;
            add_header X-Imprun-Deny-Reason $imprun_deny_reason always;
            return 429 '{"error":"rate_limited","reason":"$imprun_deny_reason"}\n';
        }
        add_header X-Imprun-Deny-Reason $imprun_deny_reason always;
        return 403 '{"error":"forbidden","reason":"$imprun_deny_reason"}\n';
    }
    location @imprun_unavailable {
        default_type application/json;
        if ($imprun_status = "") {
            add_header Retry-After 5 always;
            return 503 '{"error":"credential_check_unavailable"}\n';
        }
        return 500 '{"error":"internal"}\n';
    }
`
}

// listenAddr is the address nginx listens on for a gateway listener port.
func (r nginxRenderer) listenAddr(port int) (string, error) {
	addr, ok := r.opts.NginxListen[port]
	if !ok {
		return strconv.Itoa(port), nil
	}
	if !safeNginxToken(addr) {
		return "", fmt.Errorf("listen address %q cannot be rendered for nginx", addr)
	}
	return addr, nil
}

func appendListen(ls []ListenSocket, l ListenSocket) []ListenSocket {
	for _, cur := range ls {
		if cur == l {
			return ls
		}
	}
	return append(ls, l)
}

// safeNginxToken accepts host names and addresses.
func safeNginxToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:_[]", c)) {
			return false
		}
	}
	return true
}

// safeNginxValue rejects what could end a directive or open a block: the snapshot is data and
// must never inject configuration.
func safeNginxValue(s string) bool {
	return !strings.ContainsAny(s, ";{}\n\r\"'`\\ \t$")
}

// nginxQuote wraps a value in double quotes, escaping the quote and backslash so the value
// cannot end the string. It does not neutralise "$": nginx has no escape for it, so values
// used as plain strings must pass nginxLiteral, and regexes keep "$" as an anchor.
func nginxQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", " ", "\r", " ")
	return `"` + r.Replace(s) + `"`
}

// nginxLiteral reports whether s can be a quoted nginx string that means exactly s: nginx
// would expand a "$" as a variable.
func nginxLiteral(s string) bool {
	return !strings.ContainsAny(s, "$\n\r")
}

// NginxCredentialMap renders the agent's whole credential set as one nginx map from a presented
// X-API-Key ("<key_prefix>.<secret>") to the credential's id and secret hash, for a local check
// (njs or Lua) that wants to verify without the agent. It is one map for all publishes, not one
// per publish: every map is an nginx variable, and nginx's configuration load grows with
// variables times locations (measured: 1,000 publishes with a map each take 3.9 s to load
// against 0.18 s with one map of 1,000 entries). Grants are the verifier's business.
func NginxCredentialMap(creds []Credential) []byte {
	var b strings.Builder
	b.WriteString("# Credential hashes of every active credential of this agent (hashes only). Do not edit.\n")
	b.WriteString("map $http_x_api_key $imprun_credential {\n    default \"\";\n")
	for _, c := range creds {
		if c.Type != CredentialAPIKey || !safeNginxToken(c.KeyPrefix) || !nginxLiteral(c.SecretHash) || !safeNginxToken(c.ID) {
			continue
		}
		fmt.Fprintf(&b, "    %s %s;\n", nginxQuote("~^"+regexp.QuoteMeta(c.KeyPrefix)+`\.`), nginxQuote(c.ID+":"+c.SecretHash))
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// RenderCredentials renders, for a local check (njs or Lua) that wants to verify without the
// agent, an nginx map from a presented X-API-Key ("<key_prefix>.<secret>") to the secret hash
// of the credential with that prefix. The file stands alone inside http {} (it needs no
// variable defined elsewhere); the rendered publish itself asks the verifier through
// auth_request.
func (r nginxRenderer) RenderCredentials(publishID string, creds []Credential) (string, []byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Credential hashes for publish %s. Do not edit.\n", publishID)
	fmt.Fprintf(&b, "map $http_x_api_key $%s {\n    default \"\";\n", nginxName("imp", shortID(publishID), "secret_hash"))
	for _, c := range creds {
		if !safeNginxToken(c.KeyPrefix) || !nginxLiteral(c.SecretHash) {
			continue
		}
		fmt.Fprintf(&b, "    %s %s;\n", nginxQuote("~^"+regexp.QuoteMeta(c.KeyPrefix)+`\.`), nginxQuote(c.SecretHash))
	}
	b.WriteString("}\n")
	return "credentials.conf", []byte(b.String()), nil
}
