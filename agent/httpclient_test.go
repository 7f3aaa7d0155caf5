package agent

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bursts of as many fetches as deploys run at once reuse the connections of the burst before:
// with Go's default of two idle connections a host, each burst opened six new ones.
func TestHTTPClientKeepsAConnectionPerDeploy(t *testing.T) {
	t.Parallel()
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(20 * time.Millisecond) // the burst's fetches overlap
		_, _ = io.WriteString(w, "{}")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c := NewHTTPClient(nil)
	burst := func() {
		var wg sync.WaitGroup
		for range maxConcurrentDeploys {
			wg.Go(func() {
				resp, err := c.Get(srv.URL)
				if !assert.NoError(t, err) {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			})
		}
		wg.Wait()
	}
	for range 3 {
		burst()
	}
	require.LessOrEqual(t, opened.Load(), int64(maxConcurrentDeploys), "connections opened for three bursts of %d", maxConcurrentDeploys)
}
