package egress

import (
	"strings"
	"testing"
)

func TestCheckDefault(t *testing.T) {
	t.Parallel()
	var p Policy
	refused := map[string]string{
		"127.0.0.1":                              "loopback",
		"127.8.9.10":                             "loopback",
		"::1":                                    "loopback",
		"[::1]":                                  "loopback",
		"::ffff:127.0.0.1":                       "loopback",
		"169.254.169.254":                        "instance metadata",
		"169.254.10.1":                           "link-local",
		"fe80::1":                                "link-local",
		"fd00:ec2::254":                          "AWS instance metadata",
		"0.0.0.0":                                "unspecified",
		"::":                                     "unspecified",
		"224.0.0.1":                              "multicast",
		"255.255.255.255":                        "broadcast",
		"localhost":                              "localhost",
		"LOCALHOST.":                             "localhost",
		"api.localhost":                          "localhost",
		"metadata.google.internal":               "GCP metadata",
		"kubernetes.default.svc.cluster.local":   "Kubernetes API",
		"kube-dns.kube-system.svc.cluster.local": "kube-system namespace",
		"kube-dns.kube-system":                   "kube-system namespace",
		"imprun-agent.imprun-system.svc":         "imprun-system namespace",
	}
	for host, want := range refused {
		err := p.Check(host)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error about %q", host, err, want)
		}
	}
	for _, host := range []string{"10.0.0.5", "192.168.1.10", "payments.internal", "orders.shop.svc.cluster.local",
		"api.example.com", "2001:db8::1", "kube-system.example.com"} {
		if err := p.Check(host); err != nil {
			t.Errorf("Check(%q) = %v, want nil", host, err)
		}
	}
}

func TestCheckAllowed(t *testing.T) {
	t.Parallel()
	p, err := Parse([]string{"127.0.0.0/8", "::1"}, []string{"localhost", ".dev.localhost"})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost", "api.dev.localhost"} {
		if err := p.Check(host); err != nil {
			t.Errorf("Check(%q) = %v, want nil with the allowlist", host, err)
		}
	}
	for _, host := range []string{"169.254.169.254", "other.localhost"} {
		if err := p.Check(host); err == nil {
			t.Errorf("Check(%q) = nil, want it still refused", host)
		}
	}
	if _, err := Parse([]string{"not-a-cidr"}, nil); err == nil {
		t.Error("a bad CIDR is refused")
	}
	if _, err := Parse(nil, []string{"*.example.com"}); err == nil {
		t.Error("a wildcard suffix is refused")
	}
}
