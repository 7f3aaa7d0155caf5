package http

import (
	"errors"
	nethttp "net/http"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/credential"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/subscription"
	"github.com/imprun/imprun-server/workflows"
)

// registerSubscriptions adds subscriptions (both sides) and the customer's credentials.
func (a *API) registerSubscriptions(prov, cust *echo.Group) {
	// Subscriptions and credentials commit with their audit row and then start (or signal and
	// wait on) their workflows: they own their transactions.
	a.ownTransactions(
		cust.POST("/subscriptions", a.createSubscription, RequireRole(models.RoleDeveloper)),
		cust.POST("/subscriptions/:id/cancel", a.decide(workflows.SignalCancel, true), RequireRole(models.RoleDeveloper)),
		cust.POST("/apps/:id/credentials", a.createCredential, RequireRole(models.RoleDeveloper)),
		cust.POST("/credentials/:id/rotate", a.rotateCredential, RequireRole(models.RoleDeveloper)),
		cust.POST("/credentials/:id/revoke", a.revokeCredential, RequireRole(models.RoleDeveloper)),
	)
	cust.GET("/subscriptions", a.listCustomerSubscriptions, RequireRole(models.RoleViewer))
	cust.GET("/subscriptions/:id", a.getCustomerSubscription, RequireRole(models.RoleViewer))

	prov.GET("/subscriptions", a.listProviderSubscriptions, RequireRole(models.RoleViewer))
	prov.GET("/subscriptions/:id", a.getProviderSubscription, RequireRole(models.RoleViewer))
	for _, sig := range []string{workflows.SignalApprove, workflows.SignalReject, workflows.SignalSuspend, workflows.SignalResume} {
		a.ownTransactions(prov.POST("/subscriptions/:id/"+sig, a.decide(sig, false), RequireRole(models.RoleAdmin)))
	}

	cust.GET("/apps/:id/credentials", a.listCredentials, RequireRole(models.RoleViewer))
	cust.GET("/credentials/:id", a.getCredential, RequireRole(models.RoleViewer))
}

// subscriptions is the subscription use cases with the API's store, Temporal and settings.
func (a *API) subscriptions() *subscription.Service {
	return &subscription.Service{Store: a.store, Temporal: a.temporal, TaskQueue: a.settings.TaskQueue,
		ApprovalDeadline: a.settings.ApprovalDeadline, Log: a.log}
}

func (a *API) createSubscription(c echo.Context) error {
	var req subscription.Request
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	sub, err := a.subscriptions().Create(c.Request().Context(), tenantOf(c).ID, principalOf(c).Email, req, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusCreated, sub)
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

// decide sends a decision to the subscription's workflow; the workflow's activity audits it
// (whether it came from REST or from the Temporal CLI), so this request writes no audit row.
// 200 when the workflow applied it within the wait, else 202.
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
		after, applied, err := a.subscriptions().Decide(c.Request().Context(), sub, sig, principalOf(c).Email, req.Reason)
		if err != nil {
			return err
		}
		SkipAudit(c)
		if !applied {
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

func issuedView(is credential.Issued) credentialCreated {
	out := credentialCreated{Credential: is.Credential}
	if is.Type == models.CredentialOAuthClient {
		out.ClientID, out.ClientSecret = is.KeyPrefix, is.Shown
	} else {
		out.Key = is.Shown
	}
	return out
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
	var req credential.NewCredential
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	is, err := a.credentials().Create(c.Request().Context(), app, req, principalOf(c).Email, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	ReplayWithout(c, is.Credential)
	return c.JSON(nethttp.StatusCreated, issuedView(is))
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
	after, err := a.credentials().Revoke(c.Request().Context(), cred, a.auditRecord(c, nethttp.StatusOK))
	if err != nil {
		return err
	}
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
	is, err := a.credentials().Rotate(c.Request().Context(), cred, req.GracePeriodSeconds, principalOf(c).Email, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	ReplayWithout(c, is.Credential)
	return c.JSON(nethttp.StatusCreated, issuedView(is))
}
