package http

import (
	"errors"
	nethttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerApps adds the customer's client apps: viewers read, developers and up write.
func (a *API) registerApps(g *echo.Group) {
	g.GET("/apps", a.listApps, RequireRole(models.RoleViewer))
	g.POST("/apps", a.createApp, RequireRole(models.RoleDeveloper))
	g.GET("/apps/:id", a.getApp, RequireRole(models.RoleViewer))
	g.PATCH("/apps/:id", a.updateApp, RequireRole(models.RoleDeveloper))
	g.DELETE("/apps/:id", a.deleteApp, RequireRole(models.RoleDeveloper))
}

// appRequest is the body of create (name required) and PATCH (any subset).
type appRequest struct {
	Name           *string   `json:"name"`
	Description    *string   `json:"description"`
	CallbackURLs   *[]string `json:"callback_urls"`
	AllowedOrigins *[]string `json:"allowed_origins"`
	Status         *string   `json:"status"`
}

const (
	maxAppURLs   = 20
	maxAppURLLen = 2048
)

// checkAppURL returns why raw is not an acceptable callback URL (origin false) or allowed
// origin (origin true), or "". Both are absolute https URLs; plain http only for localhost and
// 127.0.0.1. An origin is scheme://host[:port] and nothing more.
func checkAppURL(raw string, origin bool) string {
	if len(raw) > maxAppURLLen {
		return "at most 2048 characters"
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.Host == "" || u.Hostname() == "" || strings.HasSuffix(u.Host, ":") {
		return "must be an absolute URL"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "the port must be from 1 to 65535"
		}
	}
	if u.User != nil {
		return "must not hold user information"
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && h != "127.0.0.1" {
			return "must use https (http only for localhost or 127.0.0.1)"
		}
	default:
		return "must use https (http only for localhost or 127.0.0.1)"
	}
	if origin {
		if u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
			return "an origin is scheme://host[:port] with no path, query or fragment"
		}
		return ""
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return "must not have a fragment"
	}
	return ""
}

func checkAppURLs(v *validator, field string, list []string, origin bool) {
	if len(list) > maxAppURLs {
		v.add(field, "at most 20 entries")
		return
	}
	seen := map[string]bool{}
	for i, s := range list {
		f := field + "[" + strconv.Itoa(i) + "]"
		if msg := checkAppURL(s, origin); msg != "" {
			v.add(f, msg)
			continue
		}
		k := strings.ToLower(s)
		if seen[k] {
			v.add(f, "listed twice")
		}
		seen[k] = true
	}
}

// applyAppRequest validates req and writes it into app; create requires the name.
func applyAppRequest(req appRequest, app *models.ClientApp, create bool) error {
	var v validator
	if req.Name != nil {
		app.Name = strings.TrimSpace(*req.Name)
		n := utf8.RuneCountInString(app.Name)
		v.check(n >= 1 && n <= 100, "name", "required: 1 to 100 characters")
	} else if create {
		v.add("name", "required: 1 to 100 characters")
	}
	if req.Description != nil {
		app.Description = *req.Description
		v.check(utf8.RuneCountInString(app.Description) <= 500, "description", "at most 500 characters")
	}
	if req.CallbackURLs != nil {
		app.CallbackURLs = models.StringArray(*req.CallbackURLs)
		checkAppURLs(&v, "callback_urls", *req.CallbackURLs, false)
	}
	if req.AllowedOrigins != nil {
		app.AllowedOrigins = models.StringArray(*req.AllowedOrigins)
		checkAppURLs(&v, "allowed_origins", *req.AllowedOrigins, true)
	}
	if req.Status != nil {
		app.Status = *req.Status
		v.check(app.Status == models.AppActive || app.Status == models.AppInactive, "status", "must be active or inactive")
	}
	if app.Status == "" {
		app.Status = models.AppActive
	}
	return v.err()
}

func appProblem(err error, name string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return NotFound("client app")
	case errors.Is(err, store.ErrConflict):
		return Conflict("name_taken", "an app named "+name+" exists in this tenant", "")
	case errors.Is(err, store.ErrAppInUse), errors.Is(err, store.ErrInUse):
		return Conflict("in_use", "the app has pending, active or suspended subscriptions, active credentials or a revocation still rolling out; cancel the subscriptions and revoke the credentials first", "")
	}
	return err
}

func (a *API) createApp(c echo.Context) error {
	var req appRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	app := models.ClientApp{TenantID: tenantOf(c).ID}
	if err := applyAppRequest(req, &app, true); err != nil {
		return err
	}
	if err := a.store.CreateClientApp(c.Request().Context(), &app); err != nil {
		return appProblem(err, app.Name)
	}
	Audit(c, AuditEntry{Action: "client_app.create", ResourceType: "client_app", ResourceID: app.ID.String(), ResourceName: app.Name,
		Summary: map[string]any{"status": app.Status, "callback_urls": len(app.CallbackURLs), "allowed_origins": len(app.AllowedOrigins)}})
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
	app, err := a.store.GetClientApp(c.Request().Context(), tenantOf(c).ID, id)
	if err != nil {
		return appProblem(err, "")
	}
	return c.JSON(nethttp.StatusOK, app)
}

func (a *API) updateApp(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	var req appRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	t := tenantOf(c)
	// Another tenant's id is a 404 before the body is judged; the body is validated on a copy
	// first so a bad one changes nothing, then applied again under the row lock.
	cur, err := a.store.GetClientApp(ctx, t.ID, id)
	if err != nil {
		return appProblem(err, "")
	}
	probe := cur
	if err := applyAppRequest(req, &probe, false); err != nil {
		return err
	}
	before, after, err := a.store.UpdateClientApp(ctx, t.ID, id, func(app *models.ClientApp) error {
		return applyAppRequest(req, app, false)
	})
	if err != nil {
		return appProblem(err, probe.Name)
	}
	changed := []string{}
	if before.Name != after.Name {
		changed = append(changed, "name")
	}
	if before.Description != after.Description {
		changed = append(changed, "description")
	}
	if strings.Join(before.CallbackURLs, "\n") != strings.Join(after.CallbackURLs, "\n") {
		changed = append(changed, "callback_urls")
	}
	if strings.Join(before.AllowedOrigins, "\n") != strings.Join(after.AllowedOrigins, "\n") {
		changed = append(changed, "allowed_origins")
	}
	summary := map[string]any{"changed": changed}
	if before.Status != after.Status {
		summary["changed"] = append(changed, "status")
		summary["status"] = map[string]string{"before": before.Status, "after": after.Status}
	}
	Audit(c, AuditEntry{Action: "client_app.update", ResourceType: "client_app", ResourceID: after.ID.String(), ResourceName: after.Name, Summary: summary})
	return c.JSON(nethttp.StatusOK, after)
}

func (a *API) deleteApp(c echo.Context) error {
	id, err := pathUUID(c, "id")
	if err != nil {
		return err
	}
	app, err := a.store.DeleteClientApp(c.Request().Context(), tenantOf(c).ID, id)
	if err != nil {
		return appProblem(err, "")
	}
	Audit(c, AuditEntry{Action: "client_app.delete", ResourceType: "client_app", ResourceID: app.ID.String(), ResourceName: app.Name})
	return c.NoContent(nethttp.StatusNoContent)
}
