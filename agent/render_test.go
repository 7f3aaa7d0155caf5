package agent

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/imprun/imprun-server/egress"
)

func loadSnapshot(t *testing.T, mutate ...func(*Snapshot)) *Snapshot {
	t.Helper()
	data, err := os.ReadFile("testdata/snapshot.json")
	require.NoError(t, err)
	s, err := DecodeSnapshot(data)
	require.NoError(t, err)
	for _, m := range mutate {
		m(s)
	}
	return s
}

// yamlDocs decodes a multi-document YAML stream, proving the output is valid YAML.
func yamlDocs(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err)
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func resourceNames(rs []RenderedResource) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Kind + "/" + r.Name
	}
	return out
}

func TestRenderPublish(t *testing.T) {
	t.Parallel()
	const pid = "7f3c2a10"
	tests := []struct {
		name      string
		class     string
		mutate    func(*Snapshot)
		resources []string
		contains  []string
		absent    []string
	}{
		{
			name:  "envoy gateway full snapshot",
			class: GatewayClassEnvoy,
			resources: []string{
				"Gateway/imp-" + pid + "-public-gw",
				"Backend/imp-" + pid + "-charges-charges-v1",
				"Backend/imp-" + pid + "-charges-charges-v2",
				"HTTPRoute/imp-" + pid + "-charges-list-charges",
				"BackendTrafficPolicy/imp-" + pid + "-charges-list-charges",
				"SecurityPolicy/imp-" + pid + "-charges-list-charges",
				"HTTPRoute/imp-" + pid + "-charges-charge-by-id",
				"BackendTrafficPolicy/imp-" + pid + "-charges-charge-by-id",
				"SecurityPolicy/imp-" + pid + "-charges-charge-by-id",
			},
			contains: []string{
				"gatewayClassName: envoy-gateway",
				"hostname: payments.prod.kr-central.api.imprun.dev",
				"certificateRefs:",
				"name: payments-tls",
				// route policy overrides the service one; the other route inherits the service one
				"requests: 50\n            unit: Second",
				"requests: 1000\n            unit: Minute",
				"method: GET",
				"method: POST",
				"type: RegularExpression\n            value: ^/v1/charges/[0-9a-f-]+$",
				"weight: 90",
				"weight: 10",
				"request: 5000ms",
				"backendRequest: 3000ms",
				"address: 10.0.0.10",
				"address: 10.0.0.11",
				"wellKnownCACertificates: System",
				"type: LeastRequest",
				"allowOrigins:\n      - https://app.example.com",
				"extAuth:",
				"path: /verify/7f3c2a10-5b1e-4c2d-9a8f-0e1d2c3b4a59",
				"imprun.dev/revision: \"3\"",
				"- charges.example.com",
			},
			absent: []string{"wasm", "anything"},
		},
		{
			name:   "envoy without auth has no ext-auth",
			class:  GatewayClassEnvoy,
			mutate: func(s *Snapshot) { s.AuthMode = "none"; s.APIServices[0].Policies = s.APIServices[0].Policies[:1] },
			resources: []string{
				"Gateway/imp-" + pid + "-public-gw",
				"Backend/imp-" + pid + "-charges-charges-v1",
				"Backend/imp-" + pid + "-charges-charges-v2",
				"HTTPRoute/imp-" + pid + "-charges-list-charges",
				"BackendTrafficPolicy/imp-" + pid + "-charges-list-charges",
				"HTTPRoute/imp-" + pid + "-charges-charge-by-id",
				"BackendTrafficPolicy/imp-" + pid + "-charges-charge-by-id",
			},
			absent: []string{"extAuth", "SecurityPolicy"},
		},
		{
			name:  "nginx full snapshot",
			class: GatewayClassNginx,
			resources: []string{
				"NginxUpstream/imp_" + pid + "_charges_charges_v1",
				"NginxUpstream/imp_" + pid + "_charges_charges_v2",
				"NginxServer/http:charges.example.com",
				"NginxLocation/http:charges.example.com^/v1/charges/[0-9a-f-]+$",
				"NginxServer/http:payments.prod.kr-central.api.imprun.dev",
				"NginxLocation/http:payments.prod.kr-central.api.imprun.dev/v1/charges",
				"NginxServer/https:charges.example.com",
				"NginxLocation/https:charges.example.com^/v1/charges/[0-9a-f-]+$",
				"NginxServer/https:payments.prod.kr-central.api.imprun.dev",
				"NginxLocation/https:payments.prod.kr-central.api.imprun.dev/v1/charges",
			},
			contains: []string{
				"upstream imp_" + pid + "_charges_charges_v1 {\n    least_conn;\n    server 10.0.0.10:8080;\n    server 10.0.0.11:8080 weight=3;\n}",
				"split_clients \"${request_id}\" $imp_" + pid + "_charges_list_charges_upstream {\n    90.00% http://imp_" + pid + "_charges_charges_v1;\n    * https://imp_" + pid + "_charges_charges_v2;\n}",
				"proxy_pass $imp_" + pid + "_charges_list_charges_upstream;",
				"limit_req_zone $binary_remote_addr zone=imp_" + pid + "_charges_list_charges_rl:10m rate=50r/s;",
				"limit_req_zone $binary_remote_addr zone=imp_" + pid + "_charges_charge_by_id_rl:10m rate=1000r/m;",
				"listen 443 ssl;",
				"ssl_certificate payments-tls.crt;",
				"server_name charges.example.com;",
				"location ^~ /v1/charges {",
				"location ~ \"^/v1/charges/[0-9a-f-]+$\" {",
				"limit_except GET POST { deny all; }",
				"if ($http_x_tenant != \"acme\") { return 404; }",
				"if ($arg_expand = \"\") { return 404; }",
				"limit_req zone=imp_" + pid + "_charges_list_charges_rl burst=10 nodelay;",
				"add_header Access-Control-Allow-Origin \"https://app.example.com\" always;",
				"auth_request /_imprun_verify;",
				"proxy_pass http://imp_" + pid + "_charges_charges_v1;",
				"proxy_read_timeout 5000ms;",
				"proxy_pass http://127.0.0.1:8081/verify/7f3c2a10-5b1e-4c2d-9a8f-0e1d2c3b4a59;",
			},
			absent: []string{"wasm"},
		},
		{
			name:  "nginx converts hour limits to per-minute rates",
			class: GatewayClassNginx,
			mutate: func(s *Snapshot) {
				s.APIServices[0].Routes[0].Policies[0].Spec = []byte(`{"requests_per_unit": 100, "unit": "hour"}`)
			},
			contains: []string{"rate=2r/m;"},
		},
		{
			name:  "nginx keeps a tiny weighted share above 0.00%, which it would refuse",
			class: GatewayClassNginx,
			mutate: func(s *Snapshot) {
				s.APIServices[0].Routes[0].BackendRefs[0].Weight = 1
				s.APIServices[0].Routes[0].BackendRefs[1].Weight = 99999
			},
			contains: []string{"    0.01% http://imp_" + pid + "_charges_charges_v1;\n    * https://imp_" + pid + "_charges_charges_v2;"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := loadSnapshot(t, func(s *Snapshot) {
				if tc.mutate != nil {
					tc.mutate(s)
				}
			})
			r, err := RendererFor(tc.class, RenderOptions{})
			require.NoError(t, err)
			out, err := r.RenderPublish(s)
			require.NoError(t, err)
			text := string(out.Config)
			if tc.resources != nil {
				assert.Equal(t, tc.resources, resourceNames(out.Resources))
			}
			for _, want := range tc.contains {
				if !strings.Contains(text, want) {
					t.Errorf("rendered config lacks %q", want)
				}
			}
			for _, unwanted := range tc.absent {
				if strings.Contains(text, unwanted) {
					t.Errorf("rendered config contains %q", unwanted)
				}
			}
			if t.Failed() {
				t.Logf("rendered config:\n%s", text)
			}
			for _, res := range out.Resources {
				assert.Len(t, res.Hash, 64, "resource %s/%s has a hash", res.Kind, res.Name)
			}
			if tc.class == GatewayClassNginx {
				nginxCheck(t, out.Config, certificateRefs(s)...)
			}
			if tc.class == GatewayClassEnvoy {
				docs := yamlDocs(t, out.Config)
				assert.Len(t, docs, len(out.Resources))
				for i, d := range docs {
					assert.Equal(t, out.Resources[i].Kind, d["kind"])
					meta := d["metadata"].(map[string]any)
					assert.Equal(t, out.Resources[i].Name, meta["name"])
					assert.Equal(t, "imprun-gateway", meta["namespace"])
				}
			}

			// Rendering is deterministic: resource hashes decide "unchanged".
			again, err := r.RenderPublish(s)
			require.NoError(t, err)
			assert.Equal(t, out.Config, again.Config)
		})
	}
}

func TestRenderPublishErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		class   string
		mutate  func(*Snapshot)
		wantErr string
	}{
		{"unknown backend", GatewayClassEnvoy, func(s *Snapshot) { s.APIServices[0].Routes[1].BackendRefs[0].BackendID = "nope" }, `unknown backend "nope"`},
		{"unknown backend nginx", GatewayClassNginx, func(s *Snapshot) { s.APIServices[0].Routes[1].BackendRefs[0].BackendID = "nope" }, `unknown backend "nope"`},
		{"listener port out of range", GatewayClassEnvoy, func(s *Snapshot) { s.Gateway.Listeners[0].Port = 70000 }, "port 70000 out of range"},
		{"terminating TLS without certificate", GatewayClassEnvoy, func(s *Snapshot) { s.Gateway.Listeners[1].TLS = nil }, "needs a certificate_ref"},
		{"backend without endpoints", GatewayClassEnvoy, func(s *Snapshot) { s.APIServices[0].Backends[1].Endpoints = nil }, "has no endpoints"},
		{"bad path match type", GatewayClassEnvoy, func(s *Snapshot) { s.APIServices[0].Routes[0].Matches.Path.Type = "glob" }, `unsupported path match type "glob"`},
		{"bad rate-limit unit", GatewayClassEnvoy, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Policies[0].Spec = []byte(`{"requests_per_unit": 5, "unit": "fortnight"}`)
		}, "unit second|minute|hour|day"},
		// The checks every gateway class shares run once, in decodeRoutePolicies.
		{"bad rate-limit unit nginx", GatewayClassNginx, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Policies[0].Spec = []byte(`{"requests_per_unit": 5, "unit": "fortnight"}`)
		}, "unit second|minute|hour|day"},
		{"rate-limit spec not an object", GatewayClassEnvoy, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Policies[0].Spec = []byte(`[1]`)
		}, "policy p-route-rl (rate-limit)"},
		{"bad client CIDR envoy", GatewayClassEnvoy, func(s *Snapshot) { addRoutePolicy(s, "ip-allow", `{"cidrs": ["10.0.0.0/33"]}`) }, "is not an address or CIDR"},
		{"bad client CIDR nginx", GatewayClassNginx, func(s *Snapshot) { addRoutePolicy(s, "ip-deny", `{"cidrs": ["nope"]}`) }, "is not an address or CIDR"},
		{"prefix rewrite of an exact route envoy", GatewayClassEnvoy, func(s *Snapshot) {
			addRoutePolicy(s, "url-rewrite", `{"path": {"type": "prefix", "value": "/api"}}`)
			s.APIServices[0].Routes[0].Matches.Path.Type = "exact"
		}, "a prefix rewrite needs a prefix path match"},
		{"prefix rewrite of an exact route nginx", GatewayClassNginx, func(s *Snapshot) {
			addRoutePolicy(s, "url-rewrite", `{"path": {"type": "prefix", "value": "/api"}}`)
			s.APIServices[0].Routes[0].Matches.Path.Type = "exact"
		}, "a prefix rewrite needs a prefix path match"},
		{"unknown rewrite path type", GatewayClassNginx, func(s *Snapshot) { addRoutePolicy(s, "url-rewrite", `{"path": {"type": "regex", "value": "/api"}}`) }, `unsupported path type "regex"`},
		{"nginx path injection", GatewayClassNginx, func(s *Snapshot) { s.APIServices[0].Routes[0].Matches.Path.Value = "/a; } server { listen 1" }, "cannot be rendered for nginx"},
		{"nginx header value injection", GatewayClassNginx, func(s *Snapshot) { s.APIServices[0].Routes[0].Matches.Headers[0].Value = "$host" }, "cannot be rendered for nginx"},
		{"nginx endpoint injection", GatewayClassNginx, func(s *Snapshot) { s.APIServices[0].Backends[0].Endpoints[0].Host = "a;b" }, "bad endpoint"},
		{"nginx duplicate locations", GatewayClassNginx, func(s *Snapshot) {
			r := s.APIServices[0].Routes[0]
			r.Name = "dup"
			r.Policies = nil
			s.APIServices[0].Routes = append(s.APIServices[0].Routes, r)
		}, "match the same location"},
		{"path regex PCRE reads differently (nginx)", GatewayClassNginx, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Matches.Path.Type, s.APIServices[0].Routes[0].Matches.Path.Value = "regex", `^/\x{263a}`
		}, "path regex uses"},
		{"path regex PCRE reads differently (envoy)", GatewayClassEnvoy, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Matches.Path.Type, s.APIServices[0].Routes[0].Matches.Path.Value = "regex", `^/\x{263a}`
		}, "path regex uses"},
		{"header regex ReDoS (nginx)", GatewayClassNginx, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Matches.Headers[0] = ValueMatch{Name: "X-A", Type: "RegularExpression", Value: "^(a+)+$"}
		}, "nests a quantifier"},
		{"header regex ReDoS (envoy)", GatewayClassEnvoy, func(s *Snapshot) {
			s.APIServices[0].Routes[0].Matches.Headers[0] = ValueMatch{Name: "X-A", Type: "RegularExpression", Value: "^(a+)+$"}
		}, "nests a quantifier"},
		{"nginx tcp listener", GatewayClassNginx, func(s *Snapshot) { s.Gateway.Listeners[0].Protocol = "TCP" }, "not supported by the nginx renderer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := loadSnapshot(t, tc.mutate)
			r, err := RendererFor(tc.class, RenderOptions{})
			require.NoError(t, err)
			_, err = r.RenderPublish(s)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// addRoutePolicy gives the sample's first route a route-scoped policy.
func addRoutePolicy(s *Snapshot, typ, spec string) {
	r := &s.APIServices[0].Routes[0]
	r.Policies = append(r.Policies, Policy{ID: "p-" + typ, Type: typ, Scope: "route", Spec: []byte(spec)})
}

func TestRendererForUnknownClass(t *testing.T) {
	t.Parallel()
	_, err := RendererFor("haproxy", RenderOptions{})
	require.ErrorContains(t, err, `unsupported gateway class "haproxy"`)
}

func TestDecodeSnapshot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, json, wantErr string
	}{
		{"not json", `{`, "decode snapshot"},
		{"no publish id", `{"gateway":{"listeners":[{"port":80}]}}`, "publish_id is missing"},
		{"no listeners", `{"publish_id":"p","gateway":{"name":"g"}}`, `gateway "g" has no listeners`},
		{"unknown fields are fine", `{"publish_id":"p","new":{"x":1},"gateway":{"listeners":[{"port":80,"new":true}]}}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeSnapshot([]byte(tc.json))
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestDNSName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		parts []string
		want  string
	}{
		{[]string{"imp", "7f3c2a10", "Public GW"}, "imp-7f3c2a10-public-gw"},
		{[]string{"--a--", "", "b__c"}, "a-b-c"},
		{[]string{"ÄÖ"}, "x"},
		{[]string{strings.Repeat("a", 80)}, strings.Repeat("a", 54) + "-" + hashText([]byte(strings.Repeat("a", 80)))[:8]},
	}
	for _, tc := range tests {
		got := dnsName(tc.parts...)
		assert.Equal(t, tc.want, got, "dnsName(%q)", tc.parts)
		assert.LessOrEqual(t, len(got), 63)
	}
}

func TestEffectivePoliciesPrecedence(t *testing.T) {
	t.Parallel()
	svc := APIService{Policies: []Policy{
		{ID: "g", Type: "cors", Scope: "global"},
		{ID: "s", Type: "cors", Scope: "service"},
		{ID: "s-rl", Type: "rate-limit", Scope: "service"},
	}}
	route := Route{Policies: []Policy{{ID: "r-rl", Type: "rate-limit"}}}
	got := effectivePolicies(svc, route)
	require.Len(t, got, 2)
	assert.Equal(t, "s", got[0].ID, "service beats global")
	assert.Equal(t, "r-rl", got[1].ID, "route beats service")
}

func TestRenderCredentials(t *testing.T) {
	t.Parallel()
	creds := []Credential{{
		ID: "cred-1", Version: 2, Type: CredentialAPIKey, KeyPrefix: "imp_ab12cd34",
		SecretHash: strings.Repeat("ab", 32),
		Grants:     []Grant{{PublishID: "pub-1", PlanID: "gold", Limits: PlanLimits{RequestsPerSecond: 5}}},
	}}
	for _, class := range []string{GatewayClassEnvoy, GatewayClassNginx} {
		r, err := RendererFor(class, RenderOptions{})
		require.NoError(t, err)
		name, data, err := r.RenderCredentials("pub-1", creds)
		require.NoError(t, err)
		assert.NotEmpty(t, name)
		assert.Contains(t, string(data), "imp_ab12cd34")
		assert.Contains(t, string(data), strings.Repeat("ab", 32))
		if class == GatewayClassEnvoy {
			docs := yamlDocs(t, data)
			require.Len(t, docs, 1)
			assert.Equal(t, "Secret", docs[0]["kind"])
		}
		if class == GatewayClassNginx {
			// The credential file stands alone inside http {}, and beside a publish's config.
			nginxCheckFiles(t, map[string][]byte{name: data})
			s := loadSnapshot(t)
			pub, err := r.RenderPublish(s)
			require.NoError(t, err)
			nginxCheckFiles(t, map[string][]byte{"publish.conf": pub.Config, name: data}, certificateRefs(s)...)
		}
	}
}

func TestNginxCertificateRefs(t *testing.T) {
	t.Parallel()
	s := loadSnapshot(t)
	for _, l := range s.Gateway.Listeners {
		if l.TLS != nil && l.TLS.CertificateRef != "" {
			r, err := RendererFor(GatewayClassNginx, RenderOptions{NginxCertDir: "/etc/imprun/certs"})
			require.NoError(t, err)
			out, err := r.RenderPublish(s)
			require.NoError(t, err)
			require.Contains(t, string(out.Config), "ssl_certificate /etc/imprun/certs/"+l.TLS.CertificateRef+".crt;")
			for _, bad := range []string{"../../etc/shadow", "a;b", "/abs/path", "x y"} {
				l.TLS.CertificateRef = bad
				_, err := r.RenderPublish(s)
				require.ErrorContains(t, err, "is not a plain name", bad)
			}
			return
		}
	}
	t.Fatal("the sample snapshot has no TLS listener")
}

// TestRenderRefusesEgress: a snapshot with a backend the egress policy refuses renders for no
// gateway class, unless the agent allows that range.
func TestRenderRefusesEgress(t *testing.T) {
	t.Parallel()
	for _, class := range []string{GatewayClassNginx, GatewayClassEnvoy} {
		s := loadSnapshot(t, func(s *Snapshot) { s.APIServices[0].Backends[0].Endpoints[0].Host = "169.254.169.254" })
		r, err := RendererFor(class, RenderOptions{})
		require.NoError(t, err)
		_, err = r.RenderPublish(s)
		require.ErrorContains(t, err, "instance metadata", class)

		s = loadSnapshot(t, func(s *Snapshot) { s.APIServices[0].Backends[0].Endpoints[0].Host = "127.0.0.1" })
		_, err = r.RenderPublish(s)
		require.ErrorContains(t, err, "loopback", class)
		pol, err := egress.Parse([]string{"127.0.0.0/8"}, nil)
		require.NoError(t, err)
		r, err = RendererFor(class, RenderOptions{Egress: pol})
		require.NoError(t, err)
		_, err = r.RenderPublish(s)
		require.NoError(t, err, "allowed by the agent's policy")
	}
}

// TestEnvoyBackendHostnames: an endpoint named by DNS is a hostname endpoint, an address an ip
// endpoint.
func TestEnvoyBackendHostnames(t *testing.T) {
	t.Parallel()
	s := loadSnapshot(t, func(s *Snapshot) { s.APIServices[0].Backends[0].Endpoints[1].Host = "payments.internal" })
	r, err := RendererFor(GatewayClassEnvoy, RenderOptions{})
	require.NoError(t, err)
	out, err := r.RenderPublish(s)
	require.NoError(t, err)
	require.Contains(t, string(out.Config), "hostname: payments.internal")
	require.Contains(t, string(out.Config), "address: 10.0.0.10")
}

// TestCertificatesArePerTenant: a certificate_ref resolves among the publish's tenant's
// certificates only, whatever name it gives.
func TestCertificatesArePerTenant(t *testing.T) {
	t.Parallel()
	s := loadSnapshot(t, func(s *Snapshot) { s.TenantID = "3db05400-14f5-4184-9abd-a73c56f7be16" })
	var ref string
	for _, l := range s.Gateway.Listeners {
		if l.TLS != nil && l.TLS.CertificateRef != "" {
			ref = l.TLS.CertificateRef
		}
	}
	require.NotEmpty(t, ref)
	r, err := RendererFor(GatewayClassNginx, RenderOptions{NginxCertDir: "/etc/imprun/certs"})
	require.NoError(t, err)
	out, err := r.RenderPublish(s)
	require.NoError(t, err)
	require.Contains(t, string(out.Config), "ssl_certificate /etc/imprun/certs/3db05400-14f5-4184-9abd-a73c56f7be16/"+ref+".crt;")

	r, err = RendererFor(GatewayClassEnvoy, RenderOptions{})
	require.NoError(t, err)
	out, err = r.RenderPublish(s)
	require.NoError(t, err)
	require.Contains(t, string(out.Config), "name: tenant-3db05400-"+ref)
}
