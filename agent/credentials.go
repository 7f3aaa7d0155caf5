package agent

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// credentialsFile is the name of the credential set inside the state directory.
const credentialsFile = "credentials.json"

// Credential types, as stored in credentials.json.
const (
	CredentialAPIKey      = "api_key"
	CredentialOAuthClient = "oauth_client"
)

// Credential is one credential the agent's gateways accept. Only the hash of the secret is ever
// held. A revoked credential stays as a tombstone so that an older upsert delivered late cannot
// bring it back.
type Credential struct {
	ID string `json:"id"`
	// Version orders upserts and revokes of the same credential; older ones are ignored.
	Version int64  `json:"version"`
	Type    string `json:"type"`
	// KeyPrefix is the text before the "." of an API key ("imp_xxxxxxxx") or an OAuth client id.
	KeyPrefix string `json:"key_prefix"`
	// SecretHash is the lowercase hex SHA-256 of the secret part.
	SecretHash    string     `json:"secret_hash"`
	ClientAppID   string     `json:"client_app_id,omitempty"`
	Grants        []Grant    `json:"grants"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Revoked       bool       `json:"revoked,omitempty"`
	RevokedReason string     `json:"revoked_reason,omitempty"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// Grant lets a credential call one publish under a plan's limits.
type Grant struct {
	PublishID string     `json:"publish_id"`
	PlanID    string     `json:"plan_id"`
	Limits    PlanLimits `json:"limits"`
}

// PlanLimits are request limits; zero means unlimited.
type PlanLimits struct {
	RequestsPerSecond int64 `json:"requests_per_second,omitempty"`
	RequestsPerMinute int64 `json:"requests_per_minute,omitempty"`
	RequestsPerHour   int64 `json:"requests_per_hour,omitempty"`
	RequestsPerDay    int64 `json:"requests_per_day,omitempty"`
	Quota             int64 `json:"quota,omitempty"`
	// QuotaPeriod is the period the quota counts over: QuotaDay or QuotaMonth (UTC calendar
	// day or month), or empty for the life of the grant.
	QuotaPeriod string `json:"quota_period,omitempty"`
}

// Quota periods.
const (
	QuotaDay   = "day"
	QuotaMonth = "month"
)

// activeAt reports whether the credential can be used at now.
func (c *Credential) activeAt(now time.Time) bool {
	return !c.Revoked && (c.ExpiresAt == nil || now.Before(*c.ExpiresAt))
}

// grantFor returns the credential's grant for a publish.
func (c *Credential) grantFor(publishID string) (Grant, bool) {
	for _, g := range c.Grants {
		if g.PublishID == publishID {
			return g, true
		}
	}
	return Grant{}, false
}

// ErrStaleVersion is returned by CredentialStore.Upsert and Revoke when the store already holds
// the same or a newer version of the credential; the command must be acknowledged but ignored.
var ErrStaleVersion = errors.New("stale credential version")

// CredentialStore is the persisted credential set of an agent (state/credentials.json). It is
// safe for concurrent use: the agent writes it while a Verifier reads it.
type CredentialStore struct {
	path string

	mu    sync.RWMutex
	creds map[string]*Credential
}

// OpenCredentialStore loads the credential set from stateDir; a missing file is an empty set.
func OpenCredentialStore(stateDir string) (*CredentialStore, error) {
	s := &CredentialStore{path: filepath.Join(stateDir, credentialsFile), creds: map[string]*Credential{}}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var file struct {
		Credentials []*Credential `json:"credentials"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("decode %s: %w", s.path, err)
	}
	for _, c := range file.Credentials {
		s.creds[c.ID] = c
	}
	return s, nil
}

// Upsert stores c unless the store already holds the same or a newer version (ErrStaleVersion).
func (s *CredentialStore) Upsert(c Credential) error {
	if err := validateCredential(&c); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.creds[c.ID]; ok && cur.Version >= c.Version {
		return fmt.Errorf("credential %s version %d (have %d): %w", c.ID, c.Version, cur.Version, ErrStaleVersion)
	}
	c.Revoked, c.RevokedReason = false, ""
	c.UpdatedAt = time.Now().UTC()
	return s.commitLocked(c.ID, &c)
}

// Revoke marks a credential revoked at version unless the store holds a newer version
// (ErrStaleVersion). Revoking an unknown credential leaves a tombstone, so an upsert that was
// sent earlier but arrives later stays ignored.
func (s *CredentialStore) Revoke(id string, version int64, reason string) error {
	if id == "" {
		return errors.New("credential_id is empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := &Credential{ID: id}
	if cur, ok := s.creds[id]; ok {
		// Revoking at the version already held is a redelivery of the same revoke when the
		// credential is revoked, and a legitimate revoke otherwise (the server may reuse the
		// version number for the revoke); only a strictly newer version is stale.
		if cur.Version > version || (cur.Version == version && cur.Revoked) {
			return fmt.Errorf("credential %s version %d (have %d): %w", id, version, cur.Version, ErrStaleVersion)
		}
		copied := *cur
		next = &copied
	}
	next.Version = version
	next.Revoked = true
	next.RevokedReason = reason
	next.UpdatedAt = time.Now().UTC()
	return s.commitLocked(id, next)
}

// commitLocked persists the set with c in place of the credential id, and only then makes the
// change visible, so memory never runs ahead of disk.
func (s *CredentialStore) commitLocked(id string, c *Credential) error {
	list := make([]*Credential, 0, len(s.creds)+1)
	for k, v := range s.creds {
		if k != id {
			list = append(list, v)
		}
	}
	list = append(list, c)
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	data, err := json.MarshalIndent(struct {
		Credentials []*Credential `json:"credentials"`
	}{list}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	if err := ensurePrivateDir(filepath.Dir(s.path)); err != nil {
		return err
	}
	if err := writeFileAtomic(s.path, append(data, '\n'), stateFileMode); err != nil {
		return err
	}
	s.creds[id] = c
	return nil
}

// Get returns a copy of the credential with id.
func (s *CredentialStore) Get(id string) (Credential, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.creds[id]
	if !ok {
		return Credential{}, false
	}
	return *c, true
}

// byPrefix returns copies of the credentials (revoked included) with the given key prefix.
func (s *CredentialStore) byPrefix(prefix string) []Credential {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Credential
	for _, c := range s.creds {
		if c.KeyPrefix == prefix {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ForPublish returns the credentials usable at now that hold a grant for publishID, by id.
func (s *CredentialStore) ForPublish(publishID string, now time.Time) []Credential {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Credential
	for _, c := range s.creds {
		if _, ok := c.grantFor(publishID); ok && c.activeAt(now) {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Active returns every credential usable at now, by id.
func (s *CredentialStore) Active(now time.Time) []Credential {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Credential
	for _, c := range s.creds {
		if c.activeAt(now) {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ActiveCount is the number of credentials usable at now (what heartbeats report).
func (s *CredentialStore) ActiveCount(now time.Time) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.creds {
		if c.activeAt(now) {
			n++
		}
	}
	return n
}

// validateCredential checks an upsert and normalises the hash to lowercase.
func validateCredential(c *Credential) error {
	if c.ID == "" {
		return errors.New("credential_id is empty")
	}
	if c.Type != CredentialAPIKey && c.Type != CredentialOAuthClient {
		return fmt.Errorf("credential %s: unsupported type %q", c.ID, c.Type)
	}
	if c.KeyPrefix == "" {
		return fmt.Errorf("credential %s: key_prefix is empty", c.ID)
	}
	// An API key is split at its first ".", so a prefix holding one could never be found.
	if c.Type == CredentialAPIKey && strings.Contains(c.KeyPrefix, ".") {
		return fmt.Errorf("credential %s: key_prefix must not contain '.'", c.ID)
	}
	c.SecretHash = strings.ToLower(c.SecretHash)
	if b, err := hex.DecodeString(c.SecretHash); err != nil || len(b) != 32 {
		return fmt.Errorf("credential %s: secret_hash is not a hex SHA-256", c.ID)
	}
	return nil
}
