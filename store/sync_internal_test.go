package store

import "testing"

// The pending credentials are counted from the cluster's acknowledgements only when the
// agents to count are many and most of those read; a few, or a few of many (a cluster's
// agents before v0.3 among current ones), are looked up pair by pair.
func TestCredentialsPendingQueryCountsAtOnceOnlyMostOfMany(t *testing.T) {
	for _, c := range []struct {
		n, of int
		want  string
	}{
		{1, 1, credentialsPendingByPair}, {32, 32, credentialsPendingByPair}, {40, 10000, credentialsPendingByPair},
		{5000, 10000, credentialsPendingByPair}, {33, 33, credentialsPendingByCount}, {5001, 10000, credentialsPendingByCount},
	} {
		if got := credentialsPendingQuery(c.n, c.of); got != c.want {
			t.Errorf("%d of %d agents: the other statement", c.n, c.of)
		}
	}
}
