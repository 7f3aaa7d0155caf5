package http

import (
	nethttp "net/http"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/credential"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerApps adds the customer's client apps: viewers read, developers and up write.
func (a *API) registerApps(g *echo.Group) {
	apps := collection{list: a.listApps, create: a.createApp, get: a.getApp, update: a.updateApp, delete: a.deleteApp}
	// The app use cases write their audit row in their own transaction.
	a.ownTransactions(apps.register(g, "/apps", RequireRole(models.RoleViewer), RequireRole(models.RoleDeveloper))...)
}

// credentials is the client app and credential use cases with the API's store and Temporal.
func (a *API) credentials() *credential.Service {
	return &credential.Service{Store: a.store, Temporal: a.temporal, TaskQueue: a.settings.TaskQueue, Log: a.log}
}

func (a *API) createApp(c echo.Context) error {
	var req credential.AppChanges
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	app, err := a.credentials().CreateApp(c.Request().Context(), tenantOf(c).ID, req, a.auditRecord(c, nethttp.StatusCreated))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusCreated, app)
}

func (a *API) listApps(c echo.Context) error {
	p, err := pageParams(c)
	if err != nil {
		return err
	}
	var f store.AppFilter
	if f.Status, err = queryEnum(c, "status", models.AppActive, models.AppInactive); err != nil {
		return err
	}
	rows, next, err := a.store.ListClientApps(c.Request().Context(), tenantOf(c).ID, f, p)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, listOf(rows, next))
}

func (a *API) getApp(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	app, err := a.credentials().GetApp(c.Request().Context(), tenantOf(c).ID, id)
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, app)
}

func (a *API) updateApp(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var req credential.AppChanges
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	after, err := a.credentials().UpdateApp(c.Request().Context(), tenantOf(c).ID, id, req, a.auditRecord(c, nethttp.StatusOK))
	if err != nil {
		return err
	}
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteApp(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	if err := a.credentials().DeleteApp(c.Request().Context(), tenantOf(c).ID, id, a.auditRecord(c, nethttp.StatusNoContent)); err != nil {
		return err
	}
	return c.NoContent(nethttp.StatusNoContent)
}
