package agent

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// BenchmarkHeartbeatBytes is what one heartbeat of an agent serving 100 publishes costs on the
// wire: the v0.2.0 heartbeat (the whole applied list every time, the floor the drift work
// replaces) beside today's (a digest and the credential checksum; the list only when it changed
// or the server asks). Figures: bytes per heartbeat, and per agent per minute at a 10 s
// interval.
func BenchmarkHeartbeatBytes(b *testing.B) {
	applied := make([]*agentv1.AppliedRevision, 100)
	for i := range applied {
		applied[i] = &agentv1.AppliedRevision{PublishId: uuid.NewString(), Revision: int32(i%7 + 1), Checksum: fmt.Sprintf("%064x", i)}
	}
	full := &agentv1.Heartbeat{SentAt: timestamppb.Now(), Applied: applied, CredentialCount: 40}
	digestOnly := &agentv1.Heartbeat{SentAt: timestamppb.Now(), CredentialCount: 40, AppliedDigest: appliedDigest(applied),
		CredentialChecksum: fmt.Sprintf("%064x", 1)}
	for _, c := range []struct {
		name string
		hb   *agentv1.Heartbeat
	}{{"v0.2.0-full-list", full}, {"digest", digestOnly}} {
		b.Run(c.name, func(b *testing.B) {
			var n int
			for i := 0; i < b.N; i++ {
				raw, err := proto.Marshal(c.hb)
				if err != nil {
					b.Fatal(err)
				}
				n = len(raw)
			}
			b.ReportMetric(float64(n), "bytes/heartbeat")
			b.ReportMetric(float64(n*6), "bytes/agent/min")
		})
	}
}
