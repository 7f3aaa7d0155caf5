package http_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// A secret is shown once: an Idempotency-Key replay of the request that created it answers
// with the resource but not the secret, and the stored replay holds no secret either.
func TestIdempotentReplayNeverStoresSecrets(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ops := w.env.As(opsP)
	r := ops.Post("/v1/operator/clusters", map[string]any{"name": "kr-1", "region": "kr"})
	require.Equal(t, http.StatusCreated, r.Status)
	path := "/v1/operator/clusters/" + r.Map()["id"].(string) + "/registration-tokens"

	c := ops.WithHeader("Idempotency-Key", "token-1")
	first := c.Post(path, map[string]any{"description": "edge"})
	require.Equal(t, http.StatusCreated, first.Status)
	secret := first.Map()["token"].(string)
	require.NotEmpty(t, secret)

	again := c.Post(path, map[string]any{"description": "edge"})
	require.Equal(t, http.StatusCreated, again.Status)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.Equal(t, first.Map()["id"], again.Map()["id"], "the same token, not a second one")
	require.NotContains(t, string(again.Body), secret)
	_, has := again.Map()["token"]
	require.False(t, has)

	stored := w.env.DB.IdempotentResponses(t)
	require.NotEmpty(t, stored)
	require.NotContains(t, stored, secret)
	require.Equal(t, 1, w.env.DB.Count(t, "registration_tokens"))
}
