package models_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/models"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// pol makes a policy; the name says where it comes from so the expected lists read clearly.
func pol(name, scope, typ string, prio int, enabled bool, age int) models.Policy {
	return models.Policy{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)), Name: name, Scope: scope, Type: typ,
		Priority: prio, Enabled: enabled, CreatedAt: t0.Add(time.Duration(age) * time.Minute)}
}

func namesOf(ps []models.Policy) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestEffectivePolicies(t *testing.T) {
	const g, s, r = models.ScopeGlobal, models.ScopeService, models.ScopeRoute
	cases := []struct {
		name                   string
		global, service, route []models.Policy
		want                   []string
	}{
		{name: "nothing", want: []string{}},
		{
			name:   "global only",
			global: []models.Policy{pol("g-rl", g, models.PolicyRateLimit, 100, true, 0)},
			want:   []string{"g-rl"},
		},
		{
			name:    "service beats global for the same type",
			global:  []models.Policy{pol("g-rl", g, models.PolicyRateLimit, 900, true, 0)},
			service: []models.Policy{pol("s-rl", s, models.PolicyRateLimit, 1, true, 0)},
			want:    []string{"s-rl"},
		},
		{
			name:    "route beats service and global",
			global:  []models.Policy{pol("g-rl", g, models.PolicyRateLimit, 100, true, 0)},
			service: []models.Policy{pol("s-rl", s, models.PolicyRateLimit, 100, true, 0)},
			route:   []models.Policy{pol("r-rl", r, models.PolicyRateLimit, 100, true, 0)},
			want:    []string{"r-rl"},
		},
		{
			name:    "types resolve independently",
			global:  []models.Policy{pol("g-cors", g, models.PolicyCORS, 100, true, 0), pol("g-rl", g, models.PolicyRateLimit, 100, true, 0)},
			service: []models.Policy{pol("s-retry", s, models.PolicyRetry, 100, true, 0)},
			route:   []models.Policy{pol("r-rl", r, models.PolicyRateLimit, 100, true, 0)},
			want:    []string{"g-cors", "r-rl", "s-retry"}, // cors, rate-limit, retry
		},
		{
			name:    "a disabled route policy lets the service one apply",
			service: []models.Policy{pol("s-rl", s, models.PolicyRateLimit, 100, true, 0)},
			route:   []models.Policy{pol("r-rl-off", r, models.PolicyRateLimit, 100, false, 0)},
			want:    []string{"s-rl"},
		},
		{
			name:   "disabled policies never apply",
			global: []models.Policy{pol("g-off", g, models.PolicyCORS, 100, false, 0)},
			want:   []string{},
		},
		{
			name: "within the winning scope every policy of the type applies, higher priority first, then oldest",
			service: []models.Policy{
				pol("s-hm-low", s, models.PolicyHeaderModifier, 10, true, 0),
				pol("s-hm-new", s, models.PolicyHeaderModifier, 50, true, 2),
				pol("s-hm-high", s, models.PolicyHeaderModifier, 90, true, 5),
				pol("s-hm-old", s, models.PolicyHeaderModifier, 50, true, 1),
			},
			global: []models.Policy{pol("g-hm", g, models.PolicyHeaderModifier, 1000, true, 0)},
			want:   []string{"s-hm-high", "s-hm-old", "s-hm-new", "s-hm-low"},
		},
		{
			name:   "ip-allow and ip-deny are separate types",
			global: []models.Policy{pol("g-deny", g, models.PolicyIPDeny, 100, true, 0)},
			route:  []models.Policy{pol("r-allow", r, models.PolicyIPAllow, 100, true, 0)},
			want:   []string{"r-allow", "g-deny"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := models.EffectivePolicies(tc.global, tc.service, tc.route)
			require.Equal(t, tc.want, namesOf(got))
			// The inputs' order does not matter: the snapshot checksum depends on the output.
			rev := func(ps []models.Policy) []models.Policy {
				out := make([]models.Policy, len(ps))
				for i, p := range ps {
					out[len(ps)-1-i] = p
				}
				return out
			}
			require.Equal(t, tc.want, namesOf(models.EffectivePolicies(rev(tc.global), rev(tc.service), rev(tc.route))))
		})
	}
}

func TestPolicyTypesHaveCategoriesAndSpecs(t *testing.T) {
	require.Equal(t, []string{"cors", "header-modifier", "ip-allow", "ip-deny", "rate-limit", "retry", "timeout", "url-rewrite"}, models.PolicyTypes())
	for _, typ := range models.PolicyTypes() {
		require.NotEmpty(t, models.PolicyCategory(typ), typ)
		spec, ok := models.NewPolicySpec(typ)
		require.True(t, ok, typ)
		require.NotNil(t, spec, typ)
	}
	_, ok := models.NewPolicySpec("jwt")
	require.False(t, ok, "authentication is a publish's auth mode, not a policy")
	require.Empty(t, models.PolicyCategory("jwt"))
}

func TestLabelsJSON(t *testing.T) {
	var l models.Labels
	b, err := l.MarshalJSON()
	require.NoError(t, err)
	require.Equal(t, "{}", string(b), "nil labels are an empty object")
	v, err := l.Value()
	require.NoError(t, err)
	require.Equal(t, "{}", v)
	require.NoError(t, l.Scan([]byte(`{"team":"a"}`)))
	require.Equal(t, models.Labels{"team": "a"}, l)
}
