package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/saferegex"
)

// The validation rules of the catalog. Every failing rule names the field by its JSON path
// (backend_refs[1].weight, spec.allow_origins[0]) so a client can point at it.

var (
	// An API service name: letters, digits and dashes (digest: 2-100, [A-Za-z0-9-]).
	serviceNameRe = regexp.MustCompile(`^[A-Za-z0-9-]{2,100}$`)
	// Semantic version with an optional leading v.
	semverRe = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
	// An RFC 1123 label: the names of routes, backends, policies, listeners and gateways become
	// Kubernetes object names in the cluster; cluster names and tenant slugs follow it too.
	k8sNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
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
	maxListItems = 64
	maxPriority  = 1000
)

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

func (v *validator) text(field, s string, min, max int) {
	n := utf8.RuneCountInString(s)
	switch {
	case min > 0 && strings.TrimSpace(s) == "":
		v.add(field, "required")
	case n < min || n > max:
		v.add(field, fmt.Sprintf("must be %d to %d characters", min, max))
	}
}

func (v *validator) labels(field string, l map[string]string) {
	v.check(len(l) <= maxListItems, field, fmt.Sprintf("at most %d labels", maxListItems))
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := field + "." + k
		v.check(labelKeyRe.MatchString(k), f, "label keys are 1-63 letters, digits, '_', '.', '-', starting and ending with a letter, digit or '_'")
		v.check(labelValueRe.MatchString(l[k]), f, "label values are at most 63 letters, digits, '_', '.', '-', starting and ending with a letter or digit")
	}
}

func (v *validator) timeout(field string, ms *int) {
	if ms != nil {
		v.check(*ms >= 1 && *ms <= maxTimeoutMS, field, fmt.Sprintf("must be from 1 to %d milliseconds", maxTimeoutMS))
	}
}

func (v *validator) priority(field string, p int) {
	v.check(p >= 0 && p <= maxPriority, field, fmt.Sprintf("must be from 0 to %d", maxPriority))
}

// gatewayHostname checks a route or listener hostname: lower-case RFC 1123, `*.` only as the
// whole leftmost label, never an IP address.
func (v *validator) gatewayHostname(field, h string) {
	switch {
	case len(h) > 253:
		v.add(field, "at most 253 characters")
	case isIPLiteral(h):
		v.add(field, "must be a host name, not an IP address")
	case strings.Contains(h, "*") && !strings.HasPrefix(h, "*."):
		v.add(field, "a wildcard is only allowed as the whole leftmost label, as in *.example.com")
	case strings.Count(h, "*") > 1:
		v.add(field, "a wildcard is only allowed as the whole leftmost label, as in *.example.com")
	case !gwHostnameRe.MatchString(h):
		v.add(field, "must be a lower-case RFC 1123 host name, optionally starting with *.")
	}
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// upstreamHost checks a backend endpoint host: an IP address or a DNS name.
func (v *validator) upstreamHost(field, h string) {
	switch {
	case h == "":
		v.add(field, "required")
	case isIPLiteral(h):
	case len(h) > 253 || !dnsNameRe.MatchString(h):
		v.add(field, "must be an IP address or a DNS name")
	}
}

func (v *validator) port(field string, p int) {
	v.check(p >= 1 && p <= 65535, field, "must be from 1 to 65535")
}

func (v *validator) regex(field, expr string) {
	// The regex runs on a gateway many tenants share: only the subset RE2 and PCRE read the same
	// way, without catastrophic backtracking (the agent checks it again before rendering).
	if err := saferegex.Check(expr); err != nil {
		v.add(field, "regular expression "+err.Error())
	}
}

func (v *validator) webURL(field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	v.check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && len(s) <= 2048,
		field, "must be an absolute http or https URL of at most 2048 characters")
}

func (v *validator) headerNames(field string, names []string, allowStar bool) {
	for i, n := range names {
		v.check((allowStar && n == "*") || headerNameRe.MatchString(n), fieldAt(field, i), "must be an HTTP header name")
	}
}

// ---- policy specs ----

// decodeSpec decodes a policy spec strictly into the type's spec struct: an unknown type is a
// 422 on type, an unknown or mistyped spec field a 422 on spec.<field>.
func decodeSpec(policyType string, raw json.RawMessage) (any, []FieldError) {
	spec, ok := models.NewPolicySpec(policyType)
	if !ok {
		return nil, []FieldError{{Field: "type", Message: "must be one of " + strings.Join(models.PolicyTypes(), ", ")}}
	}
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, []FieldError{{Field: "spec", Message: "required"}}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(spec)
	if err == nil && dec.More() {
		err = errors.New("more than one value")
	}
	if err == nil {
		return spec, nil
	}
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ) && typ.Field != "":
		return nil, []FieldError{{Field: "spec." + typ.Field, Message: "must be " + jsonKind(typ.Type.Kind().String())}}
	case errors.As(err, &typ):
		return nil, []FieldError{{Field: "spec", Message: "must be an object"}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		var doc any
		if json.Unmarshal(raw, &doc) == nil {
			if path, ok := unknownFieldPath(doc, reflect.TypeOf(spec), ""); ok {
				name = path
			}
		}
		return nil, []FieldError{{Field: "spec." + name, Message: "unknown field for a " + policyType + " policy"}}
	case errors.Is(err, io.EOF):
		return nil, []FieldError{{Field: "spec", Message: "required"}}
	}
	return nil, []FieldError{{Field: "spec", Message: "must be a " + policyType + " spec object"}}
}

// validateSpec checks a decoded spec and canonicalises what has one canonical form (CIDRs).
func validateSpec(v *validator, spec any) {
	switch s := spec.(type) {
	case *models.RateLimitSpec:
		v.check(s.RequestsPerUnit >= 1, "spec.requests_per_unit", "must be at least 1")
		v.check(isOneOf(s.Unit, models.PeriodSecond, models.PeriodMinute, models.PeriodHour, models.PeriodDay), "spec.unit", "must be one of second, minute, hour, day")
		v.check(s.Burst >= 0, "spec.burst", "must be 0 or more")
	case *models.CORSSpec:
		validateCORS(v, s)
		s.AllowHeaders, s.ExposeHeaders = orEmpty(s.AllowHeaders), orEmpty(s.ExposeHeaders)
	case *models.HeaderModifierSpec:
		for _, ops := range []*models.HeaderOps{s.Request, s.Response} {
			if ops != nil {
				ops.Add, ops.Set, ops.Remove = orEmpty(ops.Add), orEmpty(ops.Set), orEmpty(ops.Remove)
			}
		}
		v.check(s.Request != nil || s.Response != nil, "spec", "needs request or response header changes")
		validateHeaderOps(v, "spec.request", s.Request)
		validateHeaderOps(v, "spec.response", s.Response)
	case *models.URLRewriteSpec:
		v.check(s.Hostname != "" || s.Path != nil, "spec", "needs a hostname or a path to rewrite")
		if s.Hostname != "" {
			v.check(!strings.Contains(s.Hostname, "*") && len(s.Hostname) <= 253 && dnsNameRe.MatchString(s.Hostname), "spec.hostname", "must be a host name")
		}
		if s.Path != nil {
			v.check(isOneOf(s.Path.Type, "full", "prefix"), "spec.path.type", "must be full or prefix")
			v.check(strings.HasPrefix(s.Path.Value, "/") && len(s.Path.Value) <= 1024, "spec.path.value", "must start with / (at most 1024 characters)")
		}
	case *models.RetrySpec:
		v.check(s.NumRetries >= 1 && s.NumRetries <= 10, "spec.num_retries", "must be from 1 to 10")
		validateRetryOn(v, "spec.retry_on", s.RetryOn)
		v.check(s.PerTryTimeoutMS >= 0 && s.PerTryTimeoutMS <= maxTimeoutMS, "spec.per_try_timeout_ms", fmt.Sprintf("must be from 0 (none) to %d", maxTimeoutMS))
	case *models.TimeoutSpec:
		v.check(s.RequestMS != nil || s.BackendRequestMS != nil, "spec", "needs request_ms or backend_request_ms")
		v.timeout("spec.request_ms", s.RequestMS)
		v.timeout("spec.backend_request_ms", s.BackendRequestMS)
		if s.RequestMS != nil && s.BackendRequestMS != nil {
			v.check(*s.BackendRequestMS <= *s.RequestMS, "spec.backend_request_ms", "must not exceed request_ms")
		}
	case *models.IPListSpec:
		validateCIDRs(v, "spec.cidrs", s)
	}
}

func validateRetryOn(v *validator, field string, on []string) {
	v.check(len(on) >= 1, field, "at least one of "+strings.Join(retryOn, ", "))
	seen := map[string]bool{}
	for i, r := range on {
		v.check(isOneOf(r, retryOn...), fieldAt(field, i), "must be one of "+strings.Join(retryOn, ", "))
		v.check(!seen[r], fieldAt(field, i), "duplicate")
		seen[r] = true
	}
}

func validateCORS(v *validator, s *models.CORSSpec) {
	v.check(len(s.AllowOrigins) >= 1, "spec.allow_origins", "at least one origin (or \"*\")")
	star := false
	for i, o := range s.AllowOrigins {
		if o == "*" {
			star = true
			continue
		}
		u, err := url.Parse(strings.Replace(o, "://*.", "://wildcard.", 1))
		v.check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && (u.Path == "" || u.Path == "/") && u.RawQuery == "",
			fieldAt("spec.allow_origins", i), `must be "*" or an origin such as https://app.example.com (a leading *. is allowed)`)
	}
	v.check(len(s.AllowMethods) >= 1, "spec.allow_methods", "at least one method (or \"*\")")
	for i, m := range s.AllowMethods {
		star = star || m == "*"
		v.check(m == "*" || isOneOf(m, httpMethods...), fieldAt("spec.allow_methods", i), "must be \"*\" or one of "+strings.Join(httpMethods, ", "))
	}
	v.headerNames("spec.allow_headers", s.AllowHeaders, true)
	v.headerNames("spec.expose_headers", s.ExposeHeaders, true)
	for _, h := range append(append([]string{}, s.AllowHeaders...), s.ExposeHeaders...) {
		star = star || h == "*"
	}
	v.check(s.MaxAgeSeconds >= 0 && s.MaxAgeSeconds <= 86400, "spec.max_age_seconds", "must be from 0 to 86400")
	// Browsers refuse credentialed responses with a wildcard, so the policy would silently
	// break every credentialed request.
	v.check(!(s.AllowCredentials && star), "spec.allow_credentials", `cannot be true while an allow or expose list holds "*"; list the origins, methods and headers`)
}

func validateHeaderOps(v *validator, field string, ops *models.HeaderOps) {
	if ops == nil {
		return
	}
	v.check(len(ops.Add)+len(ops.Set)+len(ops.Remove) > 0, field, "needs add, set or remove")
	// add may give a header several values; otherwise a header is changed by one operation
	// only, since the order the proxy applies them in is not the order written here.
	changed := map[string]string{} // lower-case name -> the field that first changed it
	conflict := func(f, name string, addOK bool) {
		key := strings.ToLower(name)
		if prev, ok := changed[key]; ok && !(addOK && strings.Contains(prev, ".add[")) {
			v.add(f, "header "+name+" is already changed by "+prev)
			return
		}
		if _, ok := changed[key]; !ok {
			changed[key] = f
		}
	}
	for i, h := range ops.Add {
		f := fieldAt(field+".add", i)
		v.check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		v.check(len(h.Value) <= 4096 && !strings.ContainsAny(h.Value, "\r\n\x00"), f+".value", "at most 4096 characters, no line breaks")
		conflict(f+".name", h.Name, true)
	}
	for i, h := range ops.Set {
		f := fieldAt(field+".set", i)
		v.check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		v.check(len(h.Value) <= 4096 && !strings.ContainsAny(h.Value, "\r\n\x00"), f+".value", "at most 4096 characters, no line breaks")
		conflict(f+".name", h.Name, false)
	}
	for i, n := range ops.Remove {
		f := fieldAt(field+".remove", i)
		v.check(headerNameRe.MatchString(n), f, "must be an HTTP header name")
		conflict(f, n, false)
	}
}

// validateCIDRs parses each entry with net/netip; a bare address becomes a single-address
// prefix, and a prefix with host bits set is refused rather than silently widened or narrowed.
func validateCIDRs(v *validator, field string, s *models.IPListSpec) {
	v.check(len(s.CIDRs) >= 1 && len(s.CIDRs) <= 1000, field, "1 to 1000 CIDRs")
	seen := map[netip.Prefix]bool{}
	for i, c := range s.CIDRs {
		f := fieldAt(field, i)
		var p netip.Prefix
		if a, err := netip.ParseAddr(c); err == nil && a.Zone() == "" {
			p = netip.PrefixFrom(a, a.BitLen())
		} else if p, err = netip.ParsePrefix(c); err != nil {
			v.add(f, "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an IP address")
			continue
		}
		if p.Masked() != p {
			v.add(f, "has host bits set; did you mean "+p.Masked().String()+"?")
			continue
		}
		if seen[p] {
			v.add(f, "duplicate")
		}
		seen[p] = true
		s.CIDRs[i] = p.String()
	}
}
