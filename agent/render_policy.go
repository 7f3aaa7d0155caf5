package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
)

// routePolicies are a route's effective policies, each decoded from its spec and checked once,
// before any gateway class renders them: the renderers read these typed values (each has a
// method per gateway class) and never decode a spec themselves. A nil field is a policy type
// the route does not have. Policy types the agent does not know are left out rather than
// failing the deploy, so the server can introduce a type before every agent understands it.
type routePolicies struct {
	rateLimit      *rateLimitPolicy
	cors           *corsPolicy
	headerModifier *headerModifierPolicy
	urlRewrite     *urlRewritePolicy
	ipAllow        *IPListSpec
	ipDeny         *IPListSpec
	// retry is the route's retry policy, which replaces its first backend's own retry.
	retry   *RetrySpec
	timeout *TimeoutSpec
}

// rateLimitPolicy is a checked rate-limit policy: requests_per_unit >= 1, a known unit.
type rateLimitPolicy struct {
	id string
	RateLimitSpec
}

// corsPolicy is a decoded cors policy.
type corsPolicy struct {
	id string
	CORSSpec
}

// headerModifierPolicy is a decoded header-modifier policy.
type headerModifierPolicy struct {
	id string
	HeaderModifierSpec
}

// urlRewritePolicy is a checked url-rewrite policy: a full or prefix path rewrite, the latter
// only on a route that matches a prefix.
type urlRewritePolicy struct {
	id string
	URLRewriteSpec
}

// rateLimitUnits are the units a rate-limit policy may count in.
var rateLimitUnits = map[string]bool{"second": true, "minute": true, "hour": true, "day": true}

// decodeRoutePolicies decodes and checks the effective policies of a route (see
// effectivePolicies). The checks here are the ones that hold for every gateway class; what a
// class cannot express is refused by its renderer.
func decodeRoutePolicies(svc APIService, route Route) (routePolicies, error) {
	var out routePolicies
	for _, p := range effectivePolicies(svc, route) {
		var err error
		switch p.Type {
		case "rate-limit":
			out.rateLimit = &rateLimitPolicy{id: p.ID}
			if err = decodeSpec(p, &out.rateLimit.RateLimitSpec); err == nil {
				err = out.rateLimit.check()
			}
		case "cors":
			out.cors = &corsPolicy{id: p.ID}
			err = decodeSpec(p, &out.cors.CORSSpec)
		case "header-modifier":
			out.headerModifier = &headerModifierPolicy{id: p.ID}
			err = decodeSpec(p, &out.headerModifier.HeaderModifierSpec)
		case "url-rewrite":
			out.urlRewrite = &urlRewritePolicy{id: p.ID}
			if err = decodeSpec(p, &out.urlRewrite.URLRewriteSpec); err == nil {
				err = out.urlRewrite.check(route)
			}
		case "ip-allow", "ip-deny":
			var spec IPListSpec
			if err = decodeSpec(p, &spec); err == nil {
				err = checkCIDRs(p.ID, spec.CIDRs)
			}
			if p.Type == "ip-allow" {
				out.ipAllow = &spec
			} else {
				out.ipDeny = &spec
			}
		case "retry":
			out.retry = &RetrySpec{}
			err = decodeSpec(p, out.retry)
		case "timeout":
			out.timeout = &TimeoutSpec{}
			err = decodeSpec(p, out.timeout)
		}
		if err != nil {
			return routePolicies{}, err
		}
	}
	return out, nil
}

func (p *rateLimitPolicy) check() error {
	if p.RequestsPerUnit < 1 || !rateLimitUnits[strings.ToLower(p.Unit)] {
		return fmt.Errorf("policy %s (rate-limit): need requests_per_unit >= 1 and unit second|minute|hour|day", p.id)
	}
	return nil
}

func (p *urlRewritePolicy) check(route Route) error {
	if p.Path == nil {
		return nil
	}
	switch p.Path.Type {
	case "full":
	case "prefix":
		if t := route.Matches.Path.Type; t != "" && t != "prefix" {
			return fmt.Errorf("policy %s (url-rewrite): a prefix rewrite needs a prefix path match, route %s has %s", p.id, route.Name, t)
		}
	default:
		return fmt.Errorf("policy %s (url-rewrite): unsupported path type %q", p.id, p.Path.Type)
	}
	return nil
}

// effectivePolicies returns the policies that apply to a route, one per type, with route
// policies overriding service ones and service ones overriding global ones. Within one scope
// the first policy of a type wins: the server lists them higher priority first (it resolves
// policies per route and puts the winners on the route, keeping the scope they came from).
func effectivePolicies(svc APIService, route Route) []Policy {
	rank := map[string]int{"global": 0, "service": 1, "route": 2}
	byType := map[string]Policy{}
	best := map[string]int{}
	consider := func(p Policy, defaultScope string) {
		scope := p.Scope
		if scope == "" {
			scope = defaultScope
		}
		r := rank[scope]
		if cur, ok := best[p.Type]; !ok || r > cur {
			byType[p.Type] = p
			best[p.Type] = r
		}
	}
	for _, p := range svc.Policies {
		consider(p, "service")
	}
	for _, p := range route.Policies {
		consider(p, "route")
	}
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	sort.Strings(types)
	out := make([]Policy, 0, len(types))
	for _, t := range types {
		out = append(out, byType[t])
	}
	return out
}

// decodeSpec decodes a policy spec, naming the policy in the error.
func decodeSpec(p Policy, into any) error {
	if len(p.Spec) == 0 {
		return fmt.Errorf("policy %s (%s): spec is empty", p.ID, p.Type)
	}
	if err := json.Unmarshal(p.Spec, into); err != nil {
		return fmt.Errorf("policy %s (%s): %w", p.ID, p.Type, err)
	}
	return nil
}

// checkCIDRs refuses a client address list entry that is neither an address nor a CIDR range.
func checkCIDRs(policyID string, cidrs []string) error {
	for _, c := range cidrs {
		if _, _, err := net.ParseCIDR(c); err != nil && net.ParseIP(c) == nil {
			return fmt.Errorf("policy %s: %q is not an address or CIDR", policyID, c)
		}
	}
	return nil
}

// allowCIDRs and denyCIDRs are the client ranges of the ip-allow and ip-deny policies (none
// without the policy).
func (ps routePolicies) allowCIDRs() []string {
	if ps.ipAllow == nil {
		return nil
	}
	return ps.ipAllow.CIDRs
}

func (ps routePolicies) denyCIDRs() []string {
	if ps.ipDeny == nil {
		return nil
	}
	return ps.ipDeny.CIDRs
}
