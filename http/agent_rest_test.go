package http_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	httpapi "github.com/imprun/imprun-server/http"
	"github.com/imprun/imprun-server/http/apitest"
)

// verifierFunc is an AgentVerifier from a function.
type verifierFunc func() error

func (f verifierFunc) VerifyAgentToken(context.Context, string) (uuid.UUID, uuid.UUID, error) {
	return uuid.Nil, uuid.Nil, f()
}

// An agent's REST call while the database is down is a 503 with Retry-After, not a 401: its
// token may be good, and an agent told 401 would give it up for its refresh secret. A token
// that does not check out is the one 401.
func TestAgentAuthenticationWithTheDatabaseDown(t *testing.T) {
	t.Parallel()
	var fail atomic.Pointer[error]
	env := apitest.New(t, apitest.Options{Hooks: func(*apitest.Env) httpapi.Hooks {
		return httpapi.Hooks{Agents: verifierFunc(func() error { return *fail.Load() })}
	}})
	down := fmt.Errorf("agent x: %w", &pgconn.PgError{Code: "08006", Message: "connection failure"})
	fail.Store(&down)
	r := env.WithToken("agent-jwt").Get("/v1/agent/me")
	require.Equal(t, http.StatusServiceUnavailable, r.Status, string(r.Body))
	require.Equal(t, "5", r.Header.Get("Retry-After"))

	retired := errors.New("agent jwt of a retired generation")
	fail.Store(&retired)
	r = env.WithToken("agent-jwt").Get("/v1/agent/me")
	require.Equal(t, http.StatusUnauthorized, r.Status, string(r.Body))
}
