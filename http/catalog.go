package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerCatalog adds the provider's logical layer: API services with routes, backends and
// policies, gateway templates, products and plans.
//
// RBAC: every read needs viewer; services, routes, backends and policies are written by
// developers; gateway templates, products and plans by admins (owners and admins may do
// everything). Updates are PATCH with JSON merge-patch semantics (RFC 7396): the fields sent
// replace the current ones, objects merge, arrays are replaced whole and null clears.
func (a *API) registerCatalog(g *echo.Group) {
	viewer, dev, admin := RequireRole(models.RoleViewer), RequireRole(models.RoleDeveloper), RequireRole(models.RoleAdmin)

	g.GET("/api-services", a.listAPIServices, viewer)
	g.POST("/api-services", a.createAPIService, dev)
	g.GET("/api-services/:id", a.getAPIService, viewer)
	g.PATCH("/api-services/:id", a.updateAPIService, dev)
	g.DELETE("/api-services/:id", a.deleteAPIService, dev)

	g.GET("/api-services/:id/routes", a.listRoutes, viewer)
	g.POST("/api-services/:id/routes", a.createRoute, dev)
	g.GET("/routes/:id", a.getRoute, viewer)
	g.PATCH("/routes/:id", a.updateRoute, dev)
	g.DELETE("/routes/:id", a.deleteRoute, dev)
	g.GET("/routes/:id/effective-policies", a.effectivePolicies, viewer)

	g.GET("/api-services/:id/backends", a.listBackends, viewer)
	g.POST("/api-services/:id/backends", a.createBackend, dev)
	g.GET("/backends/:id", a.getBackend, viewer)
	g.PATCH("/backends/:id", a.updateBackend, dev)
	g.DELETE("/backends/:id", a.deleteBackend, dev)

	g.GET("/api-services/:id/policies", a.listServicePolicies, viewer)
	g.POST("/api-services/:id/policies", a.createServicePolicy, dev)
	g.GET("/policies", a.listGlobalPolicies, viewer)
	g.POST("/policies", a.createGlobalPolicy, dev)
	g.GET("/policies/:id", a.getPolicy, viewer)
	g.PATCH("/policies/:id", a.updatePolicy, dev)
	g.DELETE("/policies/:id", a.deletePolicy, dev)

	g.GET("/gateways", a.listGateways, viewer)
	g.POST("/gateways", a.createGateway, admin)
	g.GET("/gateways/:id", a.getGateway, viewer)
	g.PATCH("/gateways/:id", a.updateGateway, admin)
	g.DELETE("/gateways/:id", a.deleteGateway, admin)

	g.GET("/products", a.listProducts, viewer)
	g.POST("/products", a.createProduct, admin)
	g.GET("/products/:id", a.getProduct, viewer)
	g.PATCH("/products/:id", a.updateProduct, admin)
	g.DELETE("/products/:id", a.deleteProduct, admin)
	g.POST("/products/:id/activate", a.activateProduct, admin)
	g.POST("/products/:id/deactivate", a.deactivateProduct, admin)
	g.POST("/products/:id/archive", a.archiveProduct, admin)

	g.GET("/products/:id/plans", a.listPlans, viewer)
	g.POST("/products/:id/plans", a.createPlan, admin)
	g.GET("/plans/:id", a.getPlan, viewer)
	g.PATCH("/plans/:id", a.updatePlan, admin)
	g.DELETE("/plans/:id", a.deletePlan, admin)
}

// catalogUsageOr is the publish hook NewAPI installs: the given one, else "nothing is in use".
func catalogUsageOr(u store.CatalogUsage) store.CatalogUsage {
	if u == nil {
		return store.NoCatalogUsage{}
	}
	return u
}

// guardUsage refuses to change or delete a row a published revision uses.
func (a *API) guardUsage(ctx context.Context, tenantID uuid.UUID, kind string, id uuid.UUID) error {
	inUse, err := a.catalogUsage.InUse(ctx, tenantID, kind, id)
	if err != nil {
		return err
	}
	if inUse {
		return Conflict("in_use", "this "+strings.ReplaceAll(kind, "_", " ")+" is used by a published revision; withdraw it or publish a new revision without it first", "")
	}
	return nil
}

// catalogError maps the typed errors of the catalog store to problems, once.
func catalogError(err error, what string) error {
	if err == nil {
		return nil
	}
	var p *Problem
	var refs store.RefErrors
	var ref *store.ReferencedError
	var tr *store.TransitionError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &refs):
		fe := make([]FieldError, len(refs))
		for i, r := range refs {
			fe[i] = FieldError{Field: r.Field, Message: r.Message}
		}
		return ValidationFailed(fe...)
	case errors.Is(err, store.ErrNotFound):
		return NotFound(what)
	case errors.Is(err, store.ErrConflict):
		return Conflict("name_taken", "a "+what+" with this name exists", "")
	case errors.Is(err, store.ErrInUse):
		return Conflict("in_use", "this "+what+" is used by a publish", "")
	case errors.Is(err, store.ErrArchived):
		return Conflict("product_archived", "the product is archived and read-only", models.ProductArchived)
	case errors.Is(err, store.ErrNoActiveService):
		return ValidationFailed(FieldError{Field: "api_services", Message: "an active product needs at least one linked API service with status active"})
	case errors.As(err, &ref):
		return Conflict("referenced", fmt.Sprintf("the %s is still referenced by %s %s", what, ref.By, strings.Join(ref.Names, ", ")), "")
	case errors.As(err, &tr):
		return Conflict("invalid_transition", fmt.Sprintf("a %s %s cannot become %s", tr.From, what, tr.To), tr.From)
	}
	return err
}

// bindBody is bindJSON with the full JSON path of an unknown field (listeners[0].tls.mod
// rather than mod), since catalog bodies nest deeply.
func bindBody(c echo.Context, dst any) error {
	req := c.Request()
	raw, rerr := io.ReadAll(req.Body)
	// bindJSON sees the same bytes and, after them, the same read error (a body over the limit).
	req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(raw), errReader{rerr}))
	return withUnknownFieldPath(bindJSON(c, dst), raw, dst)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// withUnknownFieldPath replaces the bare name of an unknown_field problem with its JSON path.
func withUnknownFieldPath(err error, raw []byte, dst any) error {
	var p *Problem
	if !errors.As(err, &p) || p.Code != "unknown_field" || len(p.Errors) != 1 {
		return err
	}
	var doc any
	if json.Unmarshal(raw, &doc) != nil {
		return err
	}
	if path, ok := unknownFieldPath(doc, reflect.TypeOf(dst), ""); ok {
		p.Errors[0].Field = path
	}
	return p
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// unknownFieldPath finds the first member of doc (in key order) that the Go type t does not
// know, matching names case-insensitively as encoding/json does, and returns its path.
func unknownFieldPath(doc any, t reflect.Type, path string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return "", false // decodes itself (uuids, raw specs)
	}
	switch v := doc.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			var ft reflect.Type
			switch t.Kind() {
			case reflect.Map:
				ft = t.Elem()
			case reflect.Struct:
				f, ok := jsonField(t, k)
				if !ok {
					return sub, true
				}
				ft = f
			default:
				return "", false
			}
			if p, ok := unknownFieldPath(v[k], ft, sub); ok {
				return p, true
			}
		}
	case []any:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			return "", false
		}
		for i, e := range v {
			if p, ok := unknownFieldPath(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	}
	return "", false
}

// jsonField returns the type of the struct field that JSON member name decodes into.
func jsonField(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if sub, ok := jsonField(ft, name); ok {
					return sub, true
				}
				continue
			}
		}
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, name) {
			return f.Type, true
		}
	}
	return nil, false
}

// readPatch reads a merge-patch body: a JSON object.
func readPatch(c echo.Context) (map[string]any, error) {
	var patch map[string]any
	if err := bindJSON(c, &patch); err != nil {
		return nil, err
	}
	if patch == nil {
		return nil, BadRequest("invalid_type", "a patch is a JSON object", FieldError{Field: "body", Message: "must be an object"})
	}
	return patch, nil
}

// applyPatch merges patch (RFC 7396) into the current writable fields cur and decodes the
// result strictly into dst, so a PATCH is validated by the very rules of a create.
func applyPatch(cur any, patch map[string]any, dst any) error {
	raw, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	merged, err := json.Marshal(mergePatch(doc, patch))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return withUnknownFieldPath(jsonProblem(err), merged, dst)
	}
	return nil
}

// mergePatch is RFC 7396: objects merge member by member, null removes, anything else replaces.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}

// immutable refuses a change of a field that cannot change after creation.
func immutable(v *validator, field string, before, after any) {
	v.check(reflect.DeepEqual(before, after), field, "cannot be changed after creation")
}

// createdSummary is the audit summary of a create: the named fields of the request body.
func createdSummary(body any, fields ...string) map[string]any {
	m := toMap(body)
	out := map[string]any{}
	for _, f := range fields {
		if v, ok := m[f]; ok {
			out[f] = v
		}
	}
	return out
}

// changeSummary is the audit summary of an update: scalar fields with before and after,
// structured ones (lists, objects) just marked changed. Catalog rows hold no secrets, and
// structured values stay out so the log stays small.
func changeSummary(before, after any) map[string]any {
	b, a := toMap(before), toMap(after)
	out := map[string]any{}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "updated_at" || k == "created_at" || reflect.DeepEqual(b[k], a[k]) {
			continue
		}
		switch a[k].(type) {
		case map[string]any, []any:
			out[k] = "changed"
		default:
			if _, structured := b[k].(map[string]any); structured {
				out[k] = "changed"
				continue
			}
			out[k] = map[string]any{"before": b[k], "after": a[k]}
		}
	}
	return out
}

func toMap(v any) map[string]any {
	raw, _ := json.Marshal(v)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	return m
}

// parseIDs parses a list of UUID strings, naming each bad one.
func parseIDs(v *validator, field string, ss []string) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(ss))
	seen := map[uuid.UUID]bool{}
	for i, s := range ss {
		id, err := uuid.Parse(s)
		if err != nil {
			v.add(fieldAt(field, i), "must be a UUID")
			continue
		}
		if seen[id] {
			v.add(fieldAt(field, i), "duplicate")
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// orEmpty keeps list fields arrays, never null, in responses and rows.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
