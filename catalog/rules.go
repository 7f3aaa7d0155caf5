package catalog

import (
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/saferegex"
)

// The shared rules of the catalog's fields. Every failing rule names the field by its JSON path
// (backend_refs[1].weight, spec.allow_origins[0]) so a client can point at it.

var (
	// An API service name: letters, digits and dashes (digest: 2-100, [A-Za-z0-9-]).
	serviceNameRe = regexp.MustCompile(`^[A-Za-z0-9-]{2,100}$`)
	// Semantic version with an optional leading v.
	semverRe = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
	// LabelNameRe is an RFC 1123 label: the names of routes, backends, policies, listeners and
	// gateways become Kubernetes object names in the cluster; cluster names and tenant slugs
	// follow it too.
	LabelNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// A Gateway API hostname: lower case, optionally with `*.` as the whole leftmost label.
	gwHostnameRe = regexp.MustCompile(`^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	// An upstream DNS name (any case, no wildcard).
	dnsNameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	// An HTTP header name (RFC 9110 token).
	headerNameRe = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$")
	// Label keys and values, as Kubernetes accepts them.
	labelKeyRe   = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9_])?$`)
	labelValueRe = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$`)
)

const (
	maxTimeoutMS = 3_600_000 // one hour: longer is a stuck request, not a timeout
	// MaxListItems bounds the lists of a row (hostnames, endpoints, listeners, labels); the
	// cluster settings use the same bound.
	MaxListItems = 64
	maxPriority  = 1000
)

const labelNameRule = "an RFC 1123 label: 1-63 lower-case letters, digits and dashes"

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}

// retryOn is the set of retry triggers Envoy Gateway understands.
var retryOn = []string{"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
	"retriable-status-codes", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

func isOneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

func fieldAt(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

// validation collects the failing fields of one input, with the catalog's field rules.
type validation struct{ fault.Validator }

func (v *validation) text(field, s string, min, max int) {
	n := utf8.RuneCountInString(s)
	switch {
	case min > 0 && strings.TrimSpace(s) == "":
		v.Add(field, "required")
	case n < min || n > max:
		v.Add(field, fmt.Sprintf("must be %d to %d characters", min, max))
	}
}

func (v *validation) labelName(field, s string) {
	v.Check(LabelNameRe.MatchString(s), field, labelNameRule)
}

func (v *validation) labels(field string, l map[string]string) {
	v.Check(len(l) <= MaxListItems, field, fmt.Sprintf("at most %d labels", MaxListItems))
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := field + "." + k
		v.Check(labelKeyRe.MatchString(k), f, "label keys are 1-63 letters, digits, '_', '.', '-', starting and ending with a letter, digit or '_'")
		v.Check(labelValueRe.MatchString(l[k]), f, "label values are at most 63 letters, digits, '_', '.', '-', starting and ending with a letter or digit")
	}
}

func (v *validation) timeout(field string, ms *int) {
	if ms != nil {
		v.Check(*ms >= 1 && *ms <= maxTimeoutMS, field, fmt.Sprintf("must be from 1 to %d milliseconds", maxTimeoutMS))
	}
}

func (v *validation) priority(field string, p int) {
	v.Check(p >= 0 && p <= maxPriority, field, fmt.Sprintf("must be from 0 to %d", maxPriority))
}

// gatewayHostname checks a route or listener hostname: lower-case RFC 1123, `*.` only as the
// whole leftmost label, never an IP address.
func (v *validation) gatewayHostname(field, h string) {
	switch {
	case len(h) > 253:
		v.Add(field, "at most 253 characters")
	case isIPLiteral(h):
		v.Add(field, "must be a host name, not an IP address")
	case strings.Contains(h, "*") && !strings.HasPrefix(h, "*."):
		v.Add(field, "a wildcard is only allowed as the whole leftmost label, as in *.example.com")
	case strings.Count(h, "*") > 1:
		v.Add(field, "a wildcard is only allowed as the whole leftmost label, as in *.example.com")
	case !gwHostnameRe.MatchString(h):
		v.Add(field, "must be a lower-case RFC 1123 host name, optionally starting with *.")
	}
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// upstreamHost checks a backend endpoint host: an IP address or a DNS name.
func (v *validation) upstreamHost(field, h string) {
	switch {
	case h == "":
		v.Add(field, "required")
	case isIPLiteral(h):
	case len(h) > 253 || !dnsNameRe.MatchString(h):
		v.Add(field, "must be an IP address or a DNS name")
	}
}

func (v *validation) port(field string, p int) {
	v.Check(p >= 1 && p <= 65535, field, "must be from 1 to 65535")
}

func (v *validation) regex(field, expr string) {
	// The regex runs on a gateway many tenants share: only the subset RE2 and PCRE read the same
	// way, without catastrophic backtracking (the agent checks it again before rendering).
	if err := saferegex.Check(expr); err != nil {
		v.Add(field, "regular expression "+err.Error())
	}
}

func (v *validation) webURL(field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	v.Check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && len(s) <= 2048,
		field, "must be an absolute http or https URL of at most 2048 characters")
}

func (v *validation) headerNames(field string, names []string, allowStar bool) {
	for i, n := range names {
		v.Check((allowStar && n == "*") || headerNameRe.MatchString(n), fieldAt(field, i), "must be an HTTP header name")
	}
}

func (v *validation) tags(tags []string) {
	v.Check(len(tags) <= 20, "tags", "at most 20")
	seen := map[string]bool{}
	for i, t := range tags {
		v.Check(t != "" && len(t) <= 63 && !strings.ContainsAny(t, " \t\r\n"), fieldAt("tags", i), "1 to 63 characters without spaces")
		v.Check(!seen[t], fieldAt("tags", i), "duplicate")
		seen[t] = true
	}
}

func (v *validation) retryOn(field string, on []string) {
	v.Check(len(on) >= 1, field, "at least one of "+strings.Join(retryOn, ", "))
	seen := map[string]bool{}
	for i, r := range on {
		v.Check(isOneOf(r, retryOn...), fieldAt(field, i), "must be one of "+strings.Join(retryOn, ", "))
		v.Check(!seen[r], fieldAt(field, i), "duplicate")
		seen[r] = true
	}
}

// immutable refuses a change of a field that cannot change after creation.
func (v *validation) immutable(field string, before, after any) {
	v.Check(reflect.DeepEqual(before, after), field, "cannot be changed after creation")
}

// ids parses a list of UUID strings, naming each bad one.
func (v *validation) ids(field string, ss []string) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(ss))
	seen := map[uuid.UUID]bool{}
	for i, s := range ss {
		id, err := uuid.Parse(s)
		if err != nil {
			v.Add(fieldAt(field, i), "must be a UUID")
			continue
		}
		if seen[id] {
			v.Add(fieldAt(field, i), "duplicate")
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// orEmpty keeps list fields arrays, never null, in responses and rows.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
