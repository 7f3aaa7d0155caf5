package models

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// DeployPayloadOf decodes every payload as FromJSONMap does: the maps a payload comes back as
// from JSONB or ToJSONMap (its fast path), and maps with a fraction, a string for a number, a
// key in another case, an unknown key or a huge number (FromJSONMap's), errors included.
func TestDeployPayloadOf(t *testing.T) {
	fromJSON := func(s string) JSONMap {
		var m JSONMap
		require.NoError(t, json.Unmarshal([]byte(s), &m))
		return m
	}
	for _, m := range []JSONMap{
		ToJSONMap(DeployPayload{PublishID: "p1", Revision: 3, Checksum: "abc", Action: DeployApply}),
		ToJSONMap(DeployPayload{PublishID: "p1", Revision: 4, Checksum: "abc", Action: DeployWithdraw, Attempt: 2}),
		fromJSON(`{"publish_id": "p2", "revision": 7, "checksum": null, "action": "apply"}`),
		fromJSON(`{}`),
		{"publish_id": "p3", "revision": 5},
		fromJSON(`{"publish_id": "p4", "revision": 1.5}`),
		fromJSON(`{"publish_id": "p4", "revision": "2"}`),
		fromJSON(`{"Publish_ID": "p5", "revision": 2}`),
		fromJSON(`{"publish_id": "p6", "revision": 2, "extra": {"a": 1}}`),
		fromJSON(`{"publish_id": "p7", "revision": 1e12}`),
		fromJSON(`{"publish_id": 7, "revision": 2}`),
		nil,
	} {
		var want DeployPayload
		wantErr := FromJSONMap(m, &want)
		got, err := DeployPayloadOf(m)
		require.Equal(t, wantErr != nil, err != nil, "%v: %v / %v", m, wantErr, err)
		require.Equal(t, want, got, "%v", m)
	}
}
