// Package egress decides which backend hosts a shared gateway may send traffic to. A tenant's
// backend is reached from inside the data plane's network, so an address such as the cloud's
// instance metadata service or the agent's own verifier would be a server-side request forgery
// into it. Refused unless the cluster's operator allows them: loopback, link-local (v4 and v6,
// the metadata addresses included), unspecified, multicast and broadcast addresses, and the
// names of the cluster's control plane (localhost, metadata names, the Kubernetes API, and the
// kube-system and imprun-system namespaces).
//
// The API checks every endpoint of a publish against its cluster's policy, and the reference
// agent checks them again before rendering (defence in depth); it depends on nothing but the
// standard library, like the protocol both share.
package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// Policy is what a cluster allows beyond the default: address ranges and host name suffixes
// that would otherwise be refused.
type Policy struct {
	AllowCIDRs []netip.Prefix
	// AllowSuffixes are host names (exact) or, with a leading dot, name suffixes
	// (".svc.example.internal").
	AllowSuffixes []string
}

// Parse builds a Policy from text (the cluster's stored allowlist, an agent flag).
func Parse(cidrs, suffixes []string) (Policy, error) {
	var p Policy
	for _, c := range cidrs {
		pre, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			addr, aerr := netip.ParseAddr(strings.TrimSpace(c))
			if aerr != nil {
				return Policy{}, fmt.Errorf("%q is not an address or CIDR range", c)
			}
			pre = netip.PrefixFrom(addr, addr.BitLen())
		}
		p.AllowCIDRs = append(p.AllowCIDRs, pre.Masked())
	}
	for _, s := range suffixes {
		s = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
		if s == "" || s == "." || strings.ContainsAny(s, " /:*") {
			return Policy{}, fmt.Errorf("%q is not a host name or .suffix", s)
		}
		p.AllowSuffixes = append(p.AllowSuffixes, s)
	}
	return p, nil
}

// metadataAddrs are instance metadata services outside the link-local range.
var metadataAddrs = map[netip.Addr]string{
	netip.MustParseAddr("fd00:ec2::254"):   "the AWS instance metadata service (IPv6)",
	netip.MustParseAddr("100.100.100.200"): "the Alibaba Cloud metadata service",
}

// controlNames are exact names of control services.
var controlNames = map[string]string{
	"localhost":                            "localhost",
	"metadata":                             "the instance metadata service",
	"metadata.google.internal":             "the GCP metadata service",
	"metadata.goog":                        "the GCP metadata service",
	"instance-data":                        "the AWS instance metadata service",
	"instance-data.ec2.internal":           "the AWS instance metadata service",
	"kubernetes":                           "the Kubernetes API",
	"kubernetes.default":                   "the Kubernetes API",
	"kubernetes.default.svc":               "the Kubernetes API",
	"kubernetes.default.svc.cluster.local": "the Kubernetes API",
}

// controlNamespaces are Kubernetes namespaces whose services belong to the cluster itself.
var controlNamespaces = map[string]bool{"kube-system": true, "imprun-system": true}

// Check returns nil when host (an IP address or a DNS name) may be a backend endpoint under p,
// or an error saying what the host is.
func (p Policy) Check(host string) error {
	h := strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if addr, err := netip.ParseAddr(h); err == nil {
		addr = addr.Unmap().WithZone("")
		why := refusedAddr(addr)
		if why == "" {
			return nil
		}
		for _, pre := range p.AllowCIDRs {
			if pre.Contains(addr) {
				return nil
			}
		}
		return fmt.Errorf("%s is %s, which the cluster does not allow as a backend", host, why)
	}
	why := refusedName(h)
	if why == "" {
		return nil
	}
	for _, s := range p.AllowSuffixes {
		if h == strings.TrimPrefix(s, ".") || (strings.HasPrefix(s, ".") && strings.HasSuffix(h, s)) {
			return nil
		}
	}
	return fmt.Errorf("%s is %s, which the cluster does not allow as a backend", host, why)
}

func refusedAddr(a netip.Addr) string {
	if why, ok := metadataAddrs[a]; ok {
		return why
	}
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.Is4() && a.As4() == [4]byte{169, 254, 169, 254}:
		return "the instance metadata address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsUnspecified(), a.Is4() && a.As4()[0] == 0:
		return "an unspecified address"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast address"
	case a == netip.MustParseAddr("255.255.255.255"):
		return "the broadcast address"
	}
	return ""
}

func refusedName(h string) string {
	if why, ok := controlNames[h]; ok {
		return why
	}
	if strings.HasSuffix(h, ".localhost") {
		return "localhost"
	}
	labels := strings.Split(h, ".")
	// <service>.<namespace>[.svc[.cluster.local]]: the namespace is the second label.
	if len(labels) >= 2 && controlNamespaces[labels[1]] {
		rest := strings.Join(labels[2:], ".")
		if rest == "" || rest == "svc" || strings.HasPrefix(rest, "svc.") {
			return "a service of the cluster's " + labels[1] + " namespace"
		}
	}
	return ""
}
