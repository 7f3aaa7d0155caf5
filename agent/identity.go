package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// identityFile is the name of the identity file inside the state directory.
const identityFile = "identity.json"

// Identity is what the agent must remember across restarts to get back in: who it is and the
// credentials the server gave it. It is secret (JWT, refresh secret) and lives in a 0600 file.
type Identity struct {
	AgentID       string    `json:"agent_id"`
	ClusterID     string    `json:"cluster_id"`
	ClusterName   string    `json:"cluster_name,omitempty"`
	AgentJWT      string    `json:"agent_jwt"`
	JWTExpiresAt  time.Time `json:"jwt_expires_at"`
	RefreshSecret string    `json:"refresh_secret"`
}

// jwtUsable reports whether the JWT is worth presenting at now: set and not about to expire.
// The margin covers clock skew and the time the connect takes, so an almost-expired JWT goes
// straight to the refresh path instead of costing a refused round trip.
func (id *Identity) jwtUsable(now time.Time) bool {
	if id == nil || id.AgentJWT == "" {
		return false
	}
	if id.JWTExpiresAt.IsZero() {
		return true
	}
	return now.Add(30 * time.Second).Before(id.JWTExpiresAt)
}

// canRefresh reports whether the identity can fall back to agent_id + refresh_secret.
func (id *Identity) canRefresh() bool {
	return id != nil && id.AgentID != "" && id.RefreshSecret != ""
}

// LoadIdentity reads the identity from stateDir. It returns (nil, nil) when there is none yet,
// which means the agent has to register.
func LoadIdentity(stateDir string) (*Identity, error) {
	path := filepath.Join(stateDir, identityFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, fmt.Errorf("decode identity %s: %w", path, err)
	}
	return &id, nil
}

// SaveIdentity writes the identity to stateDir atomically with mode 0600.
func SaveIdentity(stateDir string, id *Identity) error {
	if err := ensurePrivateDir(stateDir); err != nil {
		return err
	}
	data, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return writeFileAtomic(filepath.Join(stateDir, identityFile), append(data, '\n'), stateFileMode)
}

// DeleteIdentity removes the identity from stateDir; removing a missing identity is not an error.
func DeleteIdentity(stateDir string) error {
	err := os.Remove(filepath.Join(stateDir, identityFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete identity: %w", err)
	}
	return nil
}
