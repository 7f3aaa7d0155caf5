package publish

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
)

func ptr[T any](v T) *T { return &v }

func TestApplyFieldRules(t *testing.T) {
	t.Parallel()
	id := "00000000-0000-0000-0000-000000000001"
	valid := func() Changes {
		return Changes{ProductID: ptr(id), ClusterID: ptr(id), GatewayID: ptr(id), Environment: ptr("prod"), Hostname: ptr("Pay.Example.com")}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Changes)
		field string // the first failing field; "" for none
		code  string
	}{
		{"valid", func(*Changes) {}, "", ""},
		{"no cluster", func(c *Changes) { c.ClusterID = nil }, "cluster_id", "cluster_required"},
		{"bad product", func(c *Changes) { c.ProductID = ptr("x") }, "product_id", "validation_failed"},
		{"environment", func(c *Changes) { c.Environment = ptr("qa") }, "environment", "validation_failed"},
		{"hostname", func(c *Changes) { c.Hostname = ptr("not a host") }, "hostname", "validation_failed"},
		{"auth mode", func(c *Changes) { c.AuthMode = ptr("basic") }, "auth_mode", "validation_failed"},
		{"oauth2 issuer", func(c *Changes) {
			c.AuthMode, c.AuthConfig = ptr(models.AuthOAuth2), &map[string]any{"issuer": "nope", "audience": "a"}
		}, "auth_config.issuer", "validation_failed"},
		{"visibility", func(c *Changes) { c.Visibility = ptr("secret") }, "visibility", "validation_failed"},
		{"deadline", func(c *Changes) { c.DeadlineSeconds = ptr(1) }, "deadline_seconds", "validation_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := valid()
			tc.edit(&ch)
			var p models.ProductPublish
			_, err := apply(ch, &p, true)
			if tc.field == "" {
				require.NoError(t, err)
				require.Equal(t, "pay.example.com", p.Hostname)
				require.Equal(t, models.AuthNone, p.AuthMode)
				require.Equal(t, models.VisibilityPublic, p.Visibility)
				return
			}
			f, ok := fault.As(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, tc.code, f.Code)
			require.Equal(t, tc.field, f.Fields[0].Field)
		})
	}
}

func TestReasonForARun(t *testing.T) {
	t.Parallel()
	r, ok := Reason(fault.ValidationFailed(fault.FieldError{Field: "product_id", Message: "the product must be active (it is retired)"},
		fault.FieldError{Field: "api_services", Message: "backend b: loopback"}))
	require.True(t, ok)
	require.Equal(t, "product_id: the product must be active (it is retired); api_services: backend b: loopback", r)
	r, ok = Reason(fault.Conflicting("cluster_in_maintenance", "cluster kr-1 is in maintenance: it takes no new deploys", "maintenance"))
	require.True(t, ok)
	require.Equal(t, "cluster kr-1 is in maintenance: it takes no new deploys", r)
	_, ok = Reason(fault.Down("unavailable", "db"))
	require.False(t, ok, "a dependency that is down is retried, not a rule")
}
