package agentgw

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTraceContextKeepsOnlyBoundedW3CKeys(t *testing.T) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name string
		in   map[string]string
		want map[string]any
	}{
		{"none", nil, nil},
		{"traceparent and tracestate", map[string]string{"traceparent": tp, "tracestate": "k=v"}, map[string]any{"traceparent": tp, "tracestate": "k=v"}},
		{"other keys dropped", map[string]string{"traceparent": tp, "x-secret": "no"}, map[string]any{"traceparent": tp}},
		{"oversized value dropped", map[string]string{"traceparent": strings.Repeat("a", 513)}, nil},
		{"empty value dropped", map[string]string{"traceparent": ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, traceContext(tc.in)) })
	}
}
