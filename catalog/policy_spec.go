package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"reflect"
	"strings"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/jsonfield"
	"github.com/imprun/imprun-server/models"
)

// decodeSpec decodes a policy spec strictly into the type's spec struct: an unknown type is a
// 422 on type, an unknown or mistyped spec field a 422 on spec.<field>.
func decodeSpec(policyType string, raw json.RawMessage) (any, []fault.FieldError) {
	spec, ok := models.NewPolicySpec(policyType)
	if !ok {
		return nil, []fault.FieldError{{Field: "type", Message: "must be one of " + strings.Join(models.PolicyTypes(), ", ")}}
	}
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, []fault.FieldError{{Field: "spec", Message: "required"}}
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
		return nil, []fault.FieldError{{Field: "spec." + typ.Field, Message: "must be " + jsonfield.Kind(typ.Type.Kind().String())}}
	case errors.As(err, &typ):
		return nil, []fault.FieldError{{Field: "spec", Message: "must be an object"}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		var doc any
		if json.Unmarshal(raw, &doc) == nil {
			if path, ok := jsonfield.UnknownPath(doc, reflect.TypeOf(spec)); ok {
				name = path
			}
		}
		return nil, []fault.FieldError{{Field: "spec." + name, Message: "unknown field for a " + policyType + " policy"}}
	case errors.Is(err, io.EOF):
		return nil, []fault.FieldError{{Field: "spec", Message: "required"}}
	}
	return nil, []fault.FieldError{{Field: "spec", Message: "must be a " + policyType + " spec object"}}
}

// spec checks a decoded spec and canonicalises what has one canonical form (CIDRs).
func (v *validation) spec(spec any) {
	switch s := spec.(type) {
	case *models.RateLimitSpec:
		v.Check(s.RequestsPerUnit >= 1, "spec.requests_per_unit", "must be at least 1")
		v.Check(isOneOf(s.Unit, models.PeriodSecond, models.PeriodMinute, models.PeriodHour, models.PeriodDay), "spec.unit", "must be one of second, minute, hour, day")
		v.Check(s.Burst >= 0, "spec.burst", "must be 0 or more")
	case *models.CORSSpec:
		v.cors(s)
		s.AllowHeaders, s.ExposeHeaders = orEmpty(s.AllowHeaders), orEmpty(s.ExposeHeaders)
	case *models.HeaderModifierSpec:
		for _, ops := range []*models.HeaderOps{s.Request, s.Response} {
			if ops != nil {
				ops.Add, ops.Set, ops.Remove = orEmpty(ops.Add), orEmpty(ops.Set), orEmpty(ops.Remove)
			}
		}
		v.Check(s.Request != nil || s.Response != nil, "spec", "needs request or response header changes")
		v.headerOps("spec.request", s.Request)
		v.headerOps("spec.response", s.Response)
	case *models.URLRewriteSpec:
		v.Check(s.Hostname != "" || s.Path != nil, "spec", "needs a hostname or a path to rewrite")
		if s.Hostname != "" {
			v.Check(!strings.Contains(s.Hostname, "*") && len(s.Hostname) <= 253 && dnsNameRe.MatchString(s.Hostname), "spec.hostname", "must be a host name")
		}
		if s.Path != nil {
			v.Check(isOneOf(s.Path.Type, "full", "prefix"), "spec.path.type", "must be full or prefix")
			v.Check(strings.HasPrefix(s.Path.Value, "/") && len(s.Path.Value) <= 1024, "spec.path.value", "must start with / (at most 1024 characters)")
		}
	case *models.RetrySpec:
		v.Check(s.NumRetries >= 1 && s.NumRetries <= 10, "spec.num_retries", "must be from 1 to 10")
		v.retryOn("spec.retry_on", s.RetryOn)
		v.Check(s.PerTryTimeoutMS >= 0 && s.PerTryTimeoutMS <= maxTimeoutMS, "spec.per_try_timeout_ms", fmt.Sprintf("must be from 0 (none) to %d", maxTimeoutMS))
	case *models.TimeoutSpec:
		v.Check(s.RequestMS != nil || s.BackendRequestMS != nil, "spec", "needs request_ms or backend_request_ms")
		v.timeout("spec.request_ms", s.RequestMS)
		v.timeout("spec.backend_request_ms", s.BackendRequestMS)
		if s.RequestMS != nil && s.BackendRequestMS != nil {
			v.Check(*s.BackendRequestMS <= *s.RequestMS, "spec.backend_request_ms", "must not exceed request_ms")
		}
	case *models.IPListSpec:
		v.cidrs("spec.cidrs", s)
	}
}

func (v *validation) cors(s *models.CORSSpec) {
	v.Check(len(s.AllowOrigins) >= 1, "spec.allow_origins", "at least one origin (or \"*\")")
	star := false
	for i, o := range s.AllowOrigins {
		if o == "*" {
			star = true
			continue
		}
		u, err := url.Parse(strings.Replace(o, "://*.", "://wildcard.", 1))
		v.Check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && (u.Path == "" || u.Path == "/") && u.RawQuery == "",
			fieldAt("spec.allow_origins", i), `must be "*" or an origin such as https://app.example.com (a leading *. is allowed)`)
	}
	v.Check(len(s.AllowMethods) >= 1, "spec.allow_methods", "at least one method (or \"*\")")
	for i, m := range s.AllowMethods {
		star = star || m == "*"
		v.Check(m == "*" || isOneOf(m, httpMethods...), fieldAt("spec.allow_methods", i), "must be \"*\" or one of "+strings.Join(httpMethods, ", "))
	}
	v.headerNames("spec.allow_headers", s.AllowHeaders, true)
	v.headerNames("spec.expose_headers", s.ExposeHeaders, true)
	for _, h := range append(append([]string{}, s.AllowHeaders...), s.ExposeHeaders...) {
		star = star || h == "*"
	}
	v.Check(s.MaxAgeSeconds >= 0 && s.MaxAgeSeconds <= 86400, "spec.max_age_seconds", "must be from 0 to 86400")
	// Browsers refuse credentialed responses with a wildcard, so the policy would silently
	// break every credentialed request.
	v.Check(!(s.AllowCredentials && star), "spec.allow_credentials", `cannot be true while an allow or expose list holds "*"; list the origins, methods and headers`)
}

func (v *validation) headerOps(field string, ops *models.HeaderOps) {
	if ops == nil {
		return
	}
	v.Check(len(ops.Add)+len(ops.Set)+len(ops.Remove) > 0, field, "needs add, set or remove")
	// add may give a header several values; otherwise a header is changed by one operation
	// only, since the order the proxy applies them in is not the order written here.
	changed := map[string]string{} // lower-case name -> the field that first changed it
	conflict := func(f, name string, addOK bool) {
		key := strings.ToLower(name)
		if prev, ok := changed[key]; ok && !(addOK && strings.Contains(prev, ".add[")) {
			v.Add(f, "header "+name+" is already changed by "+prev)
			return
		}
		if _, ok := changed[key]; !ok {
			changed[key] = f
		}
	}
	for i, h := range ops.Add {
		f := fieldAt(field+".add", i)
		v.Check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		v.Check(len(h.Value) <= 4096 && !strings.ContainsAny(h.Value, "\r\n\x00"), f+".value", "at most 4096 characters, no line breaks")
		conflict(f+".name", h.Name, true)
	}
	for i, h := range ops.Set {
		f := fieldAt(field+".set", i)
		v.Check(headerNameRe.MatchString(h.Name), f+".name", "must be an HTTP header name")
		v.Check(len(h.Value) <= 4096 && !strings.ContainsAny(h.Value, "\r\n\x00"), f+".value", "at most 4096 characters, no line breaks")
		conflict(f+".name", h.Name, false)
	}
	for i, n := range ops.Remove {
		f := fieldAt(field+".remove", i)
		v.Check(headerNameRe.MatchString(n), f, "must be an HTTP header name")
		conflict(f, n, false)
	}
}

// cidrs parses each entry with net/netip; a bare address becomes a single-address prefix, and
// a prefix with host bits set is refused rather than silently widened or narrowed.
func (v *validation) cidrs(field string, s *models.IPListSpec) {
	v.Check(len(s.CIDRs) >= 1 && len(s.CIDRs) <= 1000, field, "1 to 1000 CIDRs")
	seen := map[netip.Prefix]bool{}
	for i, c := range s.CIDRs {
		f := fieldAt(field, i)
		var p netip.Prefix
		if a, err := netip.ParseAddr(c); err == nil && a.Zone() == "" {
			p = netip.PrefixFrom(a, a.BitLen())
		} else if p, err = netip.ParsePrefix(c); err != nil {
			v.Add(f, "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an IP address")
			continue
		}
		if p.Masked() != p {
			v.Add(f, "has host bits set; did you mean "+p.Masked().String()+"?")
			continue
		}
		if seen[p] {
			v.Add(f, "duplicate")
		}
		seen[p] = true
		s.CIDRs[i] = p.String()
	}
}
