package agentgw

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// A credential result is settled once its command's success was signalled (claimed); a deploy
// result never is (each is a timeline event), nor is anything with no set to decide by.
func TestTemporalSinkSettled(t *testing.T) {
	s := TemporalSink{Decided: NewDecidedCommands()}
	cmd := uuid.New()
	for _, kind := range []string{models.CommandCredentialUpsert, models.CommandCredentialRevoke} {
		r := store.UnpassedResult{CommandID: cmd, Kind: kind}
		s.Decided.release(cmd)
		assert.False(t, s.Settled(r), kind+" before any success")
		assert.True(t, s.Decided.claim(cmd))
		assert.True(t, s.Settled(r), kind+" after a success")
		assert.False(t, s.Settled(store.UnpassedResult{CommandID: uuid.New(), Kind: kind}), "another command")
	}
	assert.False(t, s.Settled(store.UnpassedResult{CommandID: cmd, Kind: models.CommandDeploy}))
	assert.False(t, TemporalSink{}.Settled(store.UnpassedResult{CommandID: cmd, Kind: models.CommandCredentialUpsert}))
}
