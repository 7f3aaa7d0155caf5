package credential

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// AppChanges is the input of an app's create (name required) and edit (any subset).
type AppChanges struct {
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

// CreateApp validates and saves a new app of a customer tenant.
func (s *Service) CreateApp(ctx context.Context, tenantID uuid.UUID, ch AppChanges, rec *audit.Record) (models.ClientApp, error) {
	app := models.ClientApp{TenantID: tenantID}
	if err := applyApp(ch, &app, true); err != nil {
		return app, err
	}
	err := s.Store.InTx(ctx, func(ctx context.Context) error {
		if err := s.Store.CreateClientApp(ctx, &app); err != nil {
			return appFault(err, app.Name)
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "client_app.create", ResourceType: "client_app", ResourceID: app.ID.String(), ResourceName: app.Name,
			Summary: map[string]any{"status": app.Status, "callback_urls": len(app.CallbackURLs), "allowed_origins": len(app.AllowedOrigins)}})
	})
	return app, err
}

// GetApp returns an app of a tenant; another tenant's is not found.
func (s *Service) GetApp(ctx context.Context, tenantID, id uuid.UUID) (models.ClientApp, error) {
	app, err := s.Store.GetClientApp(ctx, tenantID, id)
	return app, appFault(err, "")
}

// UpdateApp edits an app. Another tenant's id is not found before the body is judged; the
// body is validated on a copy first so a bad one changes nothing, then applied again under the
// row lock.
func (s *Service) UpdateApp(ctx context.Context, tenantID, id uuid.UUID, ch AppChanges, rec *audit.Record) (models.ClientApp, error) {
	cur, err := s.GetApp(ctx, tenantID, id)
	if err != nil {
		return cur, err
	}
	probe := cur
	if err := applyApp(ch, &probe, false); err != nil {
		return cur, err
	}
	var after models.ClientApp
	err = s.Store.InTx(ctx, func(ctx context.Context) error {
		before, a, err := s.Store.UpdateClientApp(ctx, tenantID, id, func(app *models.ClientApp) error {
			return applyApp(ch, app, false)
		})
		if err != nil {
			return appFault(err, probe.Name)
		}
		after = a
		return rec.Write(ctx, s.Store, audit.Entry{Action: "client_app.update", ResourceType: "client_app", ResourceID: after.ID.String(), ResourceName: after.Name,
			Summary: appChanges(before, after)})
	})
	return after, err
}

// appChanges is the audit summary of an edit: the fields that changed, and the status move.
func appChanges(before, after models.ClientApp) map[string]any {
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
	return summary
}

// DeleteApp deletes an app with no live subscriptions or credentials (see store.DeleteClientApp).
func (s *Service) DeleteApp(ctx context.Context, tenantID, id uuid.UUID, rec *audit.Record) error {
	return s.Store.InTx(ctx, func(ctx context.Context) error {
		app, err := s.Store.DeleteClientApp(ctx, tenantID, id)
		if err != nil {
			return appFault(err, "")
		}
		return rec.Write(ctx, s.Store, audit.Entry{Action: "client_app.delete", ResourceType: "client_app", ResourceID: app.ID.String(), ResourceName: app.Name})
	})
}

func appFault(err error, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fault.Missing("client app")
	case errors.Is(err, store.ErrConflict):
		return fault.Conflicting("name_taken", "an app named "+name+" exists in this tenant", "")
	case errors.Is(err, store.ErrAppInUse), errors.Is(err, store.ErrInUse):
		return fault.Conflicting("in_use", "the app has pending, active or suspended subscriptions, active credentials or a revocation still rolling out; cancel the subscriptions and revoke the credentials first", "")
	}
	return err
}

// applyApp validates ch and writes it into app; create requires the name.
func applyApp(ch AppChanges, app *models.ClientApp, create bool) error {
	var v fault.Validator
	if ch.Name != nil {
		app.Name = strings.TrimSpace(*ch.Name)
		n := utf8.RuneCountInString(app.Name)
		v.Check(n >= 1 && n <= 100, "name", "required: 1 to 100 characters")
	} else if create {
		v.Add("name", "required: 1 to 100 characters")
	}
	if ch.Description != nil {
		app.Description = *ch.Description
		v.Check(utf8.RuneCountInString(app.Description) <= 500, "description", "at most 500 characters")
	}
	if ch.CallbackURLs != nil {
		app.CallbackURLs = models.StringArray(*ch.CallbackURLs)
		checkAppURLs(&v, "callback_urls", *ch.CallbackURLs, false)
	}
	if ch.AllowedOrigins != nil {
		app.AllowedOrigins = models.StringArray(*ch.AllowedOrigins)
		checkAppURLs(&v, "allowed_origins", *ch.AllowedOrigins, true)
	}
	if ch.Status != nil {
		app.Status = *ch.Status
		v.Check(app.Status == models.AppActive || app.Status == models.AppInactive, "status", "must be active or inactive")
	}
	if app.Status == "" {
		app.Status = models.AppActive
	}
	return v.Err()
}

func checkAppURLs(v *fault.Validator, field string, list []string, origin bool) {
	if len(list) > maxAppURLs {
		v.Add(field, "at most 20 entries")
		return
	}
	seen := map[string]bool{}
	for i, s := range list {
		f := field + "[" + strconv.Itoa(i) + "]"
		if msg := checkAppURL(s, origin); msg != "" {
			v.Add(f, msg)
			continue
		}
		k := strings.ToLower(s)
		if seen[k] {
			v.Add(f, "listed twice")
		}
		seen[k] = true
	}
}

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
