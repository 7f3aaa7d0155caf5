// Package credential owns a customer's client apps and their credentials: what a valid app and
// credential are, and the use cases that create, revoke and rotate credentials. A committed
// credential version is the durable intent of its rollout: the runs are started after the
// commit, and by the worker's dispatcher when that fails (see StartRuns).
package credential

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/secrets"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
)

// Temporal hands out the workflow client, or says it is not reachable.
type Temporal = temporalclient.Source

// Service runs the client app and credential use cases.
type Service struct {
	Store     *store.Store
	Temporal  Temporal
	TaskQueue string
	Log       *slog.Logger
}

// Issued is a credential with the secret it was made with: the only time the secret exists
// outside its hash.
type Issued struct {
	models.Credential
	// Shown is the secret as the caller sees it once: the key (imp_<8>.<43>) of an API key,
	// the client secret of an OAuth client (whose client id is KeyPrefix).
	Shown string
}

// NewCredential is the input of Create.
type NewCredential struct {
	Type      string     `json:"type"`
	Label     string     `json:"label"`
	ExpiresAt *time.Time `json:"expires_at"`
}

var errTemporalDown = fault.Down("temporal_unavailable", "the workflow service is not reachable; try again")

// Create issues a credential to an active app and starts its rollout.
func (s *Service) Create(ctx context.Context, app models.ClientApp, in NewCredential, actor string, rec *audit.Record) (Issued, error) {
	if in.Type == "" {
		in.Type = models.CredentialAPIKey
	}
	var v fault.Validator
	v.Check(in.Type == models.CredentialAPIKey || in.Type == models.CredentialOAuthClient, "type", "must be api_key or oauth_client")
	v.Check(len(in.Label) <= 200, "label", "at most 200 characters")
	if in.ExpiresAt != nil {
		v.Check(in.ExpiresAt.After(time.Now().Add(time.Minute)), "expires_at", "must be at least a minute in the future")
	}
	if err := v.Err(); err != nil {
		return Issued{}, err
	}
	if app.Status != models.AppActive {
		return Issued{}, fault.Conflicting("app_inactive", "the app is inactive", app.Status)
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return Issued{}, errTemporalDown
	}
	prefix, secret, shown := newSecret(in.Type)
	cred := models.Credential{TenantID: app.TenantID, ClientAppID: app.ID, Type: in.Type, KeyPrefix: prefix, SecretHash: secrets.Hash(secret),
		Label: in.Label, Status: models.CredentialActive, Version: 1, CreatedBy: actor}
	if in.ExpiresAt != nil {
		t := in.ExpiresAt.UTC().Truncate(time.Microsecond)
		cred.ExpiresAt = &t
	}
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		if err := s.Store.CreateCredential(ctx, &cred); err != nil {
			return err
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "credential.create", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
			Summary: map[string]any{"type": cred.Type, "client_app_id": app.ID, "expires_at": cred.ExpiresAt}})
	})
	if err != nil {
		return Issued{}, err
	}
	s.startRuns(ctx, tc, cred, "created")
	return Issued{Credential: cred, Shown: shown}, nil
}

// Revoke ends an active credential; its revocation rolls out to every cluster that has it.
func (s *Service) Revoke(ctx context.Context, cred models.Credential, rec *audit.Record) (models.Credential, error) {
	tc, err := s.Temporal.Client()
	if err != nil {
		return cred, errTemporalDown
	}
	var after models.Credential
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		var changed bool
		var err error
		after, changed, err = s.Store.EndCredential(ctx, cred.ID, models.CredentialRevoked)
		if err != nil {
			return err
		}
		if !changed {
			return fault.Conflicting("invalid_state", "the credential is already "+after.Status, after.Status)
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "credential.revoke", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
			Summary: map[string]any{"version": after.Version}})
	})
	if err != nil {
		return after, err
	}
	s.startRuns(ctx, tc, after, "revoked")
	return after, nil
}

// Rotate replaces an active credential by a new one of the same app; the old one ends now, or
// after gracePeriodSeconds so clients can switch.
func (s *Service) Rotate(ctx context.Context, cred models.Credential, gracePeriodSeconds int, actor string, rec *audit.Record) (Issued, error) {
	var v fault.Validator
	v.Check(gracePeriodSeconds >= 0 && gracePeriodSeconds <= 30*24*3600, "grace_period_seconds", "from 0 to 30 days")
	if err := v.Err(); err != nil {
		return Issued{}, err
	}
	notActive := fault.Conflicting("invalid_state", "only an active credential can be rotated", cred.Status)
	if cred.Status != models.CredentialActive {
		return Issued{}, notActive
	}
	tc, err := s.Temporal.Client()
	if err != nil {
		return Issued{}, errTemporalDown
	}
	prefix, secret, shown := newSecret(cred.Type)
	next := models.Credential{TenantID: cred.TenantID, ClientAppID: cred.ClientAppID, Type: cred.Type, KeyPrefix: prefix, SecretHash: secrets.Hash(secret),
		Label: cred.Label, Status: models.CredentialActive, Version: 1, ExpiresAt: cred.ExpiresAt, RotatedFrom: &cred.ID, CreatedBy: actor}
	var revokeAt *time.Time
	if gracePeriodSeconds > 0 {
		t := time.Now().UTC().Add(time.Duration(gracePeriodSeconds) * time.Second).Truncate(time.Microsecond)
		revokeAt = &t
	}
	var old models.Credential
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		var err error
		old, err = s.Store.RotateCredential(ctx, cred, &next, revokeAt)
		if errors.Is(err, store.ErrConflict) {
			return notActive
		}
		if err != nil {
			return err
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "credential.rotate", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
			Summary: map[string]any{"new_credential_id": next.ID, "grace_period_seconds": gracePeriodSeconds}})
	})
	if err != nil {
		return Issued{}, err
	}
	s.startRuns(ctx, tc, next, "rotated in")
	s.startRuns(ctx, tc, old, "rotated out")
	return Issued{Credential: next, Shown: shown}, nil
}

// startRuns starts the runs of a committed credential version. The committed version is
// itself the intent: when Temporal cannot take the start now, the worker's dispatcher starts
// it once Temporal is back, so the request succeeds and the client need not retry. A Temporal
// that does not answer must not hold the request either.
func (s *Service) startRuns(ctx context.Context, tc client.Client, cred models.Credential, reason string) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := StartRuns(sctx, s.Store, tc, s.TaskQueue, cred, reason); err != nil && s.Log != nil {
		s.Log.Warn("credential runs not started now; the dispatcher will start them", "credential_id", cred.ID, "version", cred.Version, "err", err)
	}
}

// newSecret makes the public identifier and the secret of a credential. API keys are
// `imp_<8>.<43>`: the prefix identifies the key, the part after "." is the secret whose
// SHA-256 is stored and sent to agents.
func newSecret(typ string) (prefix, secret, shown string) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	secret = secrets.Random(32)
	if typ == models.CredentialOAuthClient {
		prefix = "impc_" + string(b) + strings.ToLower(secrets.Random(6))
		return prefix, secret, secret
	}
	prefix = "imp_" + string(b)
	return prefix, secret, prefix + "." + secret
}
