package http

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	nethttp "net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imprun/imprun-server/activities"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/secrets"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/workflows"
)

// registerSubscriptions adds subscriptions (both sides) and the customer's credentials.
func (a *API) registerSubscriptions(prov, cust *echo.Group) {
	cust.POST("/subscriptions", a.createSubscription, RequireRole(models.RoleDeveloper))
	cust.GET("/subscriptions", a.listCustomerSubscriptions, RequireRole(models.RoleViewer))
	cust.GET("/subscriptions/:id", a.getCustomerSubscription, RequireRole(models.RoleViewer))
	cust.POST("/subscriptions/:id/cancel", a.decide(workflows.SignalCancel, true), RequireRole(models.RoleDeveloper))

	prov.GET("/subscriptions", a.listProviderSubscriptions, RequireRole(models.RoleViewer))
	prov.GET("/subscriptions/:id", a.getProviderSubscription, RequireRole(models.RoleViewer))
	for _, sig := range []string{workflows.SignalApprove, workflows.SignalReject, workflows.SignalSuspend, workflows.SignalResume} {
		prov.POST("/subscriptions/:id/"+sig, a.decide(sig, false), RequireRole(models.RoleAdmin))
	}

	cust.POST("/apps/:id/credentials", a.createCredential, RequireRole(models.RoleDeveloper))
	cust.GET("/apps/:id/credentials", a.listCredentials, RequireRole(models.RoleViewer))
	cust.GET("/credentials/:id", a.getCredential, RequireRole(models.RoleViewer))
	cust.POST("/credentials/:id/rotate", a.rotateCredential, RequireRole(models.RoleDeveloper))
	cust.POST("/credentials/:id/revoke", a.revokeCredential, RequireRole(models.RoleDeveloper))
}

func (a *API) temporalClient() (client.Client, error) {
	tc, err := a.temporal.Client()
	if err != nil {
		return nil, Unavailable("temporal_unavailable", "the workflow service is not reachable; try again")
	}
	return tc, nil
}

func (a *API) createSubscription(c echo.Context) error {
	var req struct {
		ProductPublishID string  `json:"product_publish_id"`
		ClientAppID      string  `json:"client_app_id"`
		PlanID           *string `json:"plan_id"`
		// Environment, when given, must be the publish's: a customer wiring its prod app
		// can't subscribe to a dev publish by mistake.
		Environment string `json:"environment"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var v validator
	pubID, err1 := uuid.Parse(req.ProductPublishID)
	v.check(err1 == nil, "product_publish_id", "required: a UUID")
	appID, err2 := uuid.Parse(req.ClientAppID)
	v.check(err2 == nil, "client_app_id", "required: a UUID")
	var planID *uuid.UUID
	if req.PlanID != nil {
		id, err := uuid.Parse(*req.PlanID)
		v.check(err == nil, "plan_id", "must be a UUID")
		planID = &id
	}
	v.check(req.Environment == "" || req.Environment == models.EnvDev || req.Environment == models.EnvStage || req.Environment == models.EnvProd,
		"environment", "must be dev, stage or prod")
	if err := v.err(); err != nil {
		return err
	}
	tc, err := a.temporalClient()
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	t := tenantOf(c)
	pub, err := a.store.PublishVisibleTo(ctx, pubID, t.ID)
	if err == nil && req.Environment != "" && pub.Environment != req.Environment {
		return ValidationFailed(FieldError{Field: "product_publish_id", Message: "the publish is in environment " + pub.Environment + ", not " + req.Environment})
	}
	if errors.Is(err, store.ErrNotFound) {
		// Withdrawn, private and not invited, or unknown: the same answer.
		return ValidationFailed(FieldError{Field: "product_publish_id", Message: "no published product you can subscribe to"})
	}
	if err != nil {
		return err
	}
	app, err := a.store.GetClientApp(ctx, t.ID, appID)
	if errors.Is(err, store.ErrNotFound) {
		return ValidationFailed(FieldError{Field: "client_app_id", Message: "no such app"})
	}
	if err != nil {
		return err
	}
	if app.Status != models.AppActive {
		return ValidationFailed(FieldError{Field: "client_app_id", Message: "the app is inactive"})
	}
	// Plans are not optional: a subscription to a product with plans runs under one, so its
	// limits and quota always reach the gateway (a subscription without one is unlimited).
	plans, defaultPlan, err := a.store.ProductPlanIDs(ctx, pub.ProductID)
	if err != nil {
		return err
	}
	switch {
	case planID != nil && !slices.Contains(plans, *planID):
		return ValidationFailed(FieldError{Field: "plan_id", Message: "not a plan of this product"})
	case planID == nil && len(plans) == 1:
		planID = &plans[0]
	case planID == nil && defaultPlan != nil:
		planID = defaultPlan
	case planID == nil && len(plans) > 1:
		return ValidationFailed(FieldError{Field: "plan_id", Message: fmt.Sprintf("required: the product has %d plans and marks none as default; choose one", len(plans))})
	}
	sub := models.Subscription{CustomerTenantID: t.ID, ProviderTenantID: pub.TenantID, ProductPublishID: pub.ID, ClientAppID: app.ID,
		PlanID: planID, ApprovalRequired: pub.ApprovalRequired, CreatedBy: principalOf(c).Email}
	if pub.ApprovalRequired {
		dl := time.Now().UTC().Add(a.settings.ApprovalDeadline).Truncate(time.Microsecond)
		sub.ApprovalDeadline = &dl
	}
	if err := a.store.CreateSubscription(ctx, &sub); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Conflict("already_subscribed", "the app already has a live subscription to this publish", "")
		}
		return err
	}
	_, err = tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.SubscriptionWorkflowID(sub.ID.String()), TaskQueue: a.settings.TaskQueue,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			temporal.NewSearchAttributeKeyKeyword(workflows.SATenantID).ValueSet(t.ID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAPublishID).ValueSet(pub.ID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAProductID).ValueSet(pub.ProductID.String()),
			temporal.NewSearchAttributeKeyKeyword(workflows.SAClusterID).ValueSet(pub.ClusterID.String())),
	}, workflows.SubscriptionWorkflow, workflows.SubscriptionInput{SubscriptionID: sub.ID.String(),
		ApprovalRequired: pub.ApprovalRequired, ApprovalDeadline: a.settings.ApprovalDeadline})
	if err != nil {
		a.log.Error("start subscription workflow", "subscription_id", sub.ID, "err", err)
		// The row stays pending without a run; cancelling it is always possible.
		_, _, _ = a.store.TransitionSubscription(context.WithoutCancel(ctx), sub.ID, []string{models.SubscriptionPending}, models.SubscriptionCancelled, "system", "the workflow could not be started")
		return Unavailable("temporal_unavailable", "the subscription could not be started; try again")
	}
	Audit(c, AuditEntry{Action: "subscription.create", ResourceType: "subscription", ResourceID: sub.ID.String(),
		Summary: map[string]any{"product_publish_id": pub.ID, "client_app_id": app.ID, "approval_required": pub.ApprovalRequired}})
	if !pub.ApprovalRequired {
		// Active at once: wait briefly for the workflow's first step so the answer says so.
		sub = a.awaitSubscription(ctx, sub, models.SubscriptionPending, 5*time.Second)
	}
	return c.JSON(nethttp.StatusCreated, sub)
}

// awaitSubscription polls until the subscription leaves `from` or the wait ends.
func (a *API) awaitSubscription(ctx context.Context, sub models.Subscription, from string, wait time.Duration) models.Subscription {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		cur, err := a.store.GetSubscriptionByID(ctx, sub.ID)
		if err == nil && cur.Status != from {
			return cur
		}
		select {
		case <-ctx.Done():
			return sub
		case <-time.After(50 * time.Millisecond):
		}
	}
	if cur, err := a.store.GetSubscriptionByID(ctx, sub.ID); err == nil {
		return cur
	}
	return sub
}

func (a *API) listSubscriptions(c echo.Context, byCustomer bool) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	var f store.SubscriptionFilter
	if f.Status, err = queryEnum(c, "status", models.SubscriptionPending, models.SubscriptionActive, models.SubscriptionRejected,
		models.SubscriptionExpired, models.SubscriptionSuspended, models.SubscriptionCancelled); err != nil {
		return err
	}
	if f.PublishID, err = queryUUID(c, "product_publish_id"); err != nil {
		return err
	}
	if f.ClientAppID, err = queryUUID(c, "client_app_id"); err != nil {
		return err
	}
	rows, next, err := a.store.ListSubscriptions(c.Request().Context(), tenantOf(c).ID, byCustomer, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) listCustomerSubscriptions(c echo.Context) error { return a.listSubscriptions(c, true) }
func (a *API) listProviderSubscriptions(c echo.Context) error { return a.listSubscriptions(c, false) }

func (a *API) loadSubscription(c echo.Context, byCustomer bool) (models.Subscription, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.Subscription{}, err
	}
	sub, err := a.store.GetSubscription(c.Request().Context(), tenantOf(c).ID, id, byCustomer)
	if errors.Is(err, store.ErrNotFound) {
		return sub, NotFound("subscription")
	}
	return sub, err
}

func (a *API) getCustomerSubscription(c echo.Context) error {
	sub, err := a.loadSubscription(c, true)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, sub)
}

func (a *API) getProviderSubscription(c echo.Context) error {
	sub, err := a.loadSubscription(c, false)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, sub)
}

// decisionFrom says in which statuses a decision applies.
var decisionFrom = map[string][]string{
	workflows.SignalApprove: {models.SubscriptionPending},
	workflows.SignalReject:  {models.SubscriptionPending},
	workflows.SignalSuspend: {models.SubscriptionActive},
	workflows.SignalResume:  {models.SubscriptionSuspended},
	workflows.SignalCancel:  {models.SubscriptionPending, models.SubscriptionActive, models.SubscriptionSuspended},
}

// decide sends a decision to the subscription's workflow: the same signal, handler and audit
// entry as `temporal workflow signal`. The answer waits briefly for the workflow to apply it.
func (a *API) decide(sig string, byCustomer bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		sub, err := a.loadSubscription(c, byCustomer)
		if err != nil {
			return err
		}
		var req struct {
			Reason string `json:"reason"`
		}
		if c.Request().ContentLength != 0 {
			if err := bindJSON(c, &req); err != nil {
				return err
			}
		}
		var v validator
		v.check(len(req.Reason) <= 1000, "reason", "at most 1000 characters")
		v.check(sig != workflows.SignalReject || strings.TrimSpace(req.Reason) != "", "reason", "required to reject")
		if err := v.err(); err != nil {
			return err
		}
		ok := false
		for _, st := range decisionFrom[sig] {
			if sub.Status == st {
				ok = true
			}
		}
		if !ok {
			return Conflict("invalid_state", "cannot "+sig+" a subscription that is "+sub.Status, sub.Status)
		}
		tc, err := a.temporalClient()
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		err = tc.SignalWorkflow(ctx, workflows.SubscriptionWorkflowID(sub.ID.String()), "", sig,
			workflows.Decision{Actor: principalOf(c).Email, Reason: req.Reason, Source: "rest"})
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return Conflict("invalid_state", "the subscription has ended", sub.Status)
		}
		if err != nil {
			return Unavailable("temporal_unavailable", "the decision could not be sent; try again")
		}
		SkipAudit(c) // the workflow's activity audits the decision itself
		after := a.awaitSubscription(ctx, sub, sub.Status, 5*time.Second)
		if after.Status == sub.Status {
			return c.JSON(nethttp.StatusAccepted, after)
		}
		return c.JSON(nethttp.StatusOK, after)
	}
}

// credentialCreated is the only response that ever holds a credential's secret.
type credentialCreated struct {
	models.Credential
	Key          string `json:"key,omitempty"`
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
}

// newCredentialSecret makes the public identifier and the secret of a credential. API keys
// are `imp_<8>.<43>`: the prefix identifies the key, the part after "." is the secret whose
// SHA-256 is stored and sent to agents.
func newCredentialSecret(typ string) (prefix, secret, shown string) {
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

func (a *API) loadApp(c echo.Context) (models.ClientApp, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.ClientApp{}, err
	}
	app, err := a.store.GetClientApp(c.Request().Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return app, NotFound("client app")
	}
	return app, err
}

func (a *API) createCredential(c echo.Context) error {
	app, err := a.loadApp(c)
	if err != nil {
		return err
	}
	var req struct {
		Type      string     `json:"type"`
		Label     string     `json:"label"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if req.Type == "" {
		req.Type = models.CredentialAPIKey
	}
	var v validator
	v.check(req.Type == models.CredentialAPIKey || req.Type == models.CredentialOAuthClient, "type", "must be api_key or oauth_client")
	v.check(len(req.Label) <= 200, "label", "at most 200 characters")
	if req.ExpiresAt != nil {
		v.check(req.ExpiresAt.After(time.Now().Add(time.Minute)), "expires_at", "must be at least a minute in the future")
	}
	if err := v.err(); err != nil {
		return err
	}
	if app.Status != models.AppActive {
		return Conflict("app_inactive", "the app is inactive", app.Status)
	}
	tc, err := a.temporalClient()
	if err != nil {
		return err
	}
	prefix, secret, shown := newCredentialSecret(req.Type)
	cred := models.Credential{TenantID: app.TenantID, ClientAppID: app.ID, Type: req.Type, KeyPrefix: prefix, SecretHash: hashSecret(secret),
		Label: req.Label, Status: models.CredentialActive, Version: 1, CreatedBy: principalOf(c).Email}
	if req.ExpiresAt != nil {
		t := req.ExpiresAt.UTC().Truncate(time.Microsecond)
		cred.ExpiresAt = &t
	}
	ctx := c.Request().Context()
	if err := a.store.CreateCredential(ctx, &cred); err != nil {
		return err
	}
	if err := a.startCredentialRuns(ctx, tc, cred, "created"); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "credential.create", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
		Summary: map[string]any{"type": cred.Type, "client_app_id": app.ID, "expires_at": cred.ExpiresAt}})
	ReplayWithout(c, cred)
	out := credentialCreated{Credential: cred}
	if req.Type == models.CredentialOAuthClient {
		out.ClientID, out.ClientSecret = prefix, shown
	} else {
		out.Key = shown
	}
	return c.JSON(nethttp.StatusCreated, out)
}

// startCredentialRuns starts the rollout of the credential's version (and its expiry run).
// The change is committed already and is itself the intent: when Temporal cannot take the
// start now, the worker's dispatcher starts it once Temporal is back, so the request succeeds
// and the client need not retry.
func (a *API) startCredentialRuns(ctx context.Context, tc client.Client, cred models.Credential, reason string) error {
	// A Temporal that does not answer must not hold the request: the dispatcher has it.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := activities.StartCredentialRuns(sctx, a.store, tc, a.settings.TaskQueue, cred, reason); err != nil {
		a.log.Warn("credential runs not started now; the dispatcher will start them", "credential_id", cred.ID, "version", cred.Version, "err", err)
	}
	return nil
}

func (a *API) listCredentials(c echo.Context) error {
	app, err := a.loadApp(c)
	if err != nil {
		return err
	}
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	rows, next, err := a.store.ListCredentials(c.Request().Context(), app.TenantID, app.ID, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

type credentialDetail struct {
	models.Credential
	Rollout []store.RolloutView `json:"rollout"`
	// RevocationConfirmed is true once every cluster confirmed a revoked or expired credential.
	RevocationConfirmed bool `json:"revocation_confirmed"`
}

func (a *API) loadCredential(c echo.Context) (models.Credential, error) {
	id, err := pathUUID(c, "id")
	if err != nil {
		return models.Credential{}, err
	}
	cred, err := a.store.GetCredential(c.Request().Context(), tenantOf(c).ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return cred, NotFound("credential")
	}
	return cred, err
}

func (a *API) getCredential(c echo.Context) error {
	cred, err := a.loadCredential(c)
	if err != nil {
		return err
	}
	ro, err := a.store.CredentialRollouts(c.Request().Context(), cred.ID)
	if err != nil {
		return err
	}
	if ro == nil {
		ro = []store.RolloutView{}
	}
	d := credentialDetail{Credential: cred, Rollout: ro}
	if cred.Status != models.CredentialActive {
		d.RevocationConfirmed = true
		for _, r := range ro {
			if r.Version != cred.Version || r.Status != models.RolloutConfirmed {
				d.RevocationConfirmed = false
			}
		}
	}
	return c.JSON(nethttp.StatusOK, d)
}

func (a *API) revokeCredential(c echo.Context) error {
	cred, err := a.loadCredential(c)
	if err != nil {
		return err
	}
	tc, err := a.temporalClient()
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	after, changed, err := a.store.EndCredential(ctx, cred.ID, models.CredentialRevoked)
	if err != nil {
		return err
	}
	if !changed {
		return Conflict("invalid_state", "the credential is already "+after.Status, after.Status)
	}
	if err := a.startCredentialRuns(ctx, tc, after, "revoked"); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "credential.revoke", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
		Summary: map[string]any{"version": after.Version}})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) rotateCredential(c echo.Context) error {
	cred, err := a.loadCredential(c)
	if err != nil {
		return err
	}
	var req struct {
		GracePeriodSeconds int `json:"grace_period_seconds"`
	}
	if c.Request().ContentLength != 0 {
		if err := bindJSON(c, &req); err != nil {
			return err
		}
	}
	var v validator
	v.check(req.GracePeriodSeconds >= 0 && req.GracePeriodSeconds <= 30*24*3600, "grace_period_seconds", "from 0 to 30 days")
	if err := v.err(); err != nil {
		return err
	}
	if cred.Status != models.CredentialActive {
		return Conflict("invalid_state", "only an active credential can be rotated", cred.Status)
	}
	tc, err := a.temporalClient()
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	prefix, secret, shown := newCredentialSecret(cred.Type)
	next := models.Credential{TenantID: cred.TenantID, ClientAppID: cred.ClientAppID, Type: cred.Type, KeyPrefix: prefix, SecretHash: hashSecret(secret),
		Label: cred.Label, Status: models.CredentialActive, Version: 1, ExpiresAt: cred.ExpiresAt, RotatedFrom: &cred.ID, CreatedBy: principalOf(c).Email}
	var revokeAt *time.Time
	if req.GracePeriodSeconds > 0 {
		t := time.Now().UTC().Add(time.Duration(req.GracePeriodSeconds) * time.Second).Truncate(time.Microsecond)
		revokeAt = &t
	}
	old, err := a.store.RotateCredential(ctx, cred, &next, revokeAt)
	if errors.Is(err, store.ErrConflict) {
		return Conflict("invalid_state", "only an active credential can be rotated", cred.Status)
	}
	if err != nil {
		return err
	}
	if err := a.startCredentialRuns(ctx, tc, next, "rotated in"); err != nil {
		return err
	}
	if err := a.startCredentialRuns(ctx, tc, old, "rotated out"); err != nil {
		return err
	}
	Audit(c, AuditEntry{Action: "credential.rotate", ResourceType: "credential", ResourceID: cred.ID.String(), ResourceName: cred.KeyPrefix,
		Summary: map[string]any{"new_credential_id": next.ID, "grace_period_seconds": req.GracePeriodSeconds}})
	ReplayWithout(c, next)
	out := credentialCreated{Credential: next}
	if next.Type == models.CredentialOAuthClient {
		out.ClientID, out.ClientSecret = prefix, shown
	} else {
		out.Key = shown
	}
	return c.JSON(nethttp.StatusCreated, out)
}
