package models

import (
	"encoding/json"
	"math"
	"time"
)

// DeployPayload is the outbox payload of a deploy command: ids and a checksum, never config.
type DeployPayload struct {
	PublishID string `json:"publish_id"`
	Revision  int    `json:"revision"`
	Checksum  string `json:"checksum"`
	Action    string `json:"action"` // apply or withdraw
	// Attempt numbers a repair: the control plane sent this revision again to one agent whose
	// gateway drifted (0 for the publish's own command).
	Attempt int `json:"attempt,omitempty"`
}

// DeployPayloadOf reads a deploy command's payload as FromJSONMap does, without its JSON round
// trip when every field has a type JSON gives it (a string, a whole number): every agent's
// result of a publish reads its command's payload (twice), and the round trip was most of that.
// A map with anything else (a fraction, a string for a number, another key) is left to
// FromJSONMap, which decides as before.
func DeployPayloadOf(m JSONMap) (DeployPayload, error) {
	var p DeployPayload
	for k, v := range m {
		ok := true
		switch k {
		case "publish_id":
			p.PublishID, ok = stringOf(v)
		case "checksum":
			p.Checksum, ok = stringOf(v)
		case "action":
			p.Action, ok = stringOf(v)
		case "revision":
			p.Revision, ok = intOf(v)
		case "attempt":
			p.Attempt, ok = intOf(v)
		default:
			ok = false // encoding/json matches keys without regard to case
		}
		if !ok {
			var slow DeployPayload
			err := FromJSONMap(m, &slow)
			return slow, err
		}
	}
	return p, nil
}

// stringOf is v as a string field decodes it: a string, or nothing for null.
func stringOf(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case nil:
		return "", true
	}
	return "", false
}

// intOf is v as an int field decodes it: a whole number within int32 (a revision, an
// attempt; larger ones are left to FromJSONMap), or nothing for null.
func intOf(v any) (int, bool) {
	switch v := v.(type) {
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt32 && v <= math.MaxInt32 {
			return int(v), true
		}
	case int:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return v, true
		}
	case nil:
		return 0, true
	}
	return 0, false
}

// Deploy actions.
const (
	DeployApply    = "apply"
	DeployWithdraw = "withdraw"
)

// PlanLimits are the limits an agent enforces for a credential on one publish (0 = none).
type PlanLimits struct {
	RequestsPerSecond int64 `json:"requests_per_second"`
	RequestsPerMinute int64 `json:"requests_per_minute"`
	RequestsPerHour   int64 `json:"requests_per_hour"`
	RequestsPerDay    int64 `json:"requests_per_day"`
	Quota             int64 `json:"quota"`
	// QuotaPeriod is the quota's period (PeriodDay or PeriodMonth); empty without a quota.
	QuotaPeriod string `json:"quota_period,omitempty"`
}

// CredentialGrant allows a credential on one publish under a plan.
type CredentialGrant struct {
	PublishID string     `json:"publish_id"`
	PlanID    string     `json:"plan_id"`
	Limits    PlanLimits `json:"limits"`
}

// CredentialUpsertPayload is the outbox payload of a credential upsert: the hash, never the
// secret.
type CredentialUpsertPayload struct {
	CredentialID string            `json:"credential_id"`
	Version      int64             `json:"version"`
	Type         string            `json:"type"` // api_key or oauth_client
	KeyPrefix    string            `json:"key_prefix"`
	SecretHash   string            `json:"secret_hash"`
	ClientAppID  string            `json:"client_app_id"`
	Grants       []CredentialGrant `json:"grants"`
	ExpiresAt    *time.Time        `json:"expires_at,omitempty"`
}

// CredentialRevokePayload is the outbox payload of a credential revocation.
type CredentialRevokePayload struct {
	CredentialID string `json:"credential_id"`
	Version      int64  `json:"version"`
	Reason       string `json:"reason"`
}

// ToJSONMap turns a payload struct into a JSONB map.
func ToJSONMap(v any) JSONMap {
	b, _ := json.Marshal(v)
	var m JSONMap
	_ = json.Unmarshal(b, &m)
	return m
}

// FromJSONMap decodes a JSONB map into a payload struct.
func FromJSONMap(m JSONMap, v any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
