package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	nethttp "net/http"
	"reflect"
	"slices"
	"sort"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/catalog"
	"github.com/imprun/imprun-server/jsonfield"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// registerCatalog adds the provider's logical layer: API services with routes, backends and
// policies, gateway templates, products and plans. The rules and use cases are the catalog
// package's; the handlers here decode, call it and describe the change for the audit log.
//
// RBAC: every read needs viewer; services, routes, backends and policies are written by
// developers; gateway templates, products and plans by admins (owners and admins may do
// everything). Updates are PATCH with JSON merge-patch semantics (RFC 7396): the fields sent
// replace the current ones, objects merge, arrays are replaced whole and null clears.
func (a *API) registerCatalog(g *echo.Group) {
	viewer, dev, admin := RequireRole(models.RoleViewer), RequireRole(models.RoleDeveloper), RequireRole(models.RoleAdmin)
	one := func(path string, k catalogRoutes, write echo.MiddlewareFunc) {
		g.GET(path, k.get, viewer)
		g.PATCH(path, k.patch, write)
		g.DELETE(path, k.delete, write)
	}
	cat := a.catalog
	services, routes, backends := apiServiceKind(cat), routeKind(cat), backendKind(cat)
	policies, gateways, products, plans := policyKind(cat), gatewayKind(cat), productKind(cat), planKind(cat)

	g.GET("/api-services", listTop(apiServiceFilter, cat.ListAPIServices), viewer)
	g.POST("/api-services", createTop(services, cat.CreateAPIService), dev)
	one("/api-services/:id", routesOf(services), dev)

	g.GET("/api-services/:id/routes", listUnder(routeFilter, cat.ListRoutes), viewer)
	g.POST("/api-services/:id/routes", createUnder(routes, cat.CreateRoute), dev)
	one("/routes/:id", routesOf(routes), dev)
	g.GET("/routes/:id/effective-policies", a.effectivePolicies, viewer)

	g.GET("/api-services/:id/backends", listUnder(backendFilter, cat.ListBackends), viewer)
	g.POST("/api-services/:id/backends", createUnder(backends, cat.CreateBackend), dev)
	one("/backends/:id", routesOf(backends), dev)

	g.GET("/api-services/:id/policies", listUnder(servicePolicyFilter, cat.ListServicePolicies), viewer)
	g.POST("/api-services/:id/policies", createUnder(policies, cat.CreateServicePolicy), dev)
	g.GET("/policies", listTop(policyFilter, cat.ListGlobalPolicies), viewer)
	g.POST("/policies", createTop(policies, cat.CreateGlobalPolicy), dev)
	one("/policies/:id", routesOf(policies), dev)

	g.GET("/gateways", listTop(gatewayFilter, cat.ListGateways), viewer)
	g.POST("/gateways", createTop(gateways, cat.CreateGateway), admin)
	one("/gateways/:id", routesOf(gateways), admin)

	g.GET("/products", listTop(productFilter, cat.ListProducts), viewer)
	g.POST("/products", createTop(products, cat.CreateProduct), admin)
	one("/products/:id", routesOf(products), admin)
	g.POST("/products/:id/activate", productStatus(cat.ActivateProduct, "product.activate"), admin)
	g.POST("/products/:id/deactivate", productStatus(cat.DeactivateProduct, "product.deactivate"), admin)
	g.POST("/products/:id/archive", productStatus(cat.ArchiveProduct, "product.archive"), admin)

	g.GET("/products/:id/plans", listUnder(noFilter, a.listPlans), viewer)
	g.POST("/products/:id/plans", createUnder(plans, cat.CreatePlan), admin)
	one("/plans/:id", routesOf(plans), admin)
}

// The naming rules other handlers share with the catalog (cluster names, tenant slugs).
var k8sNameRe = catalog.LabelNameRe

const maxListItems = catalog.MaxListItems

// catalogKind is one kind of catalog row (M, with writable fields In) as the REST API serves it:
// its use cases, and what its audit entries name and summarise. One set of handlers (createTop,
// createUnder, listTop, listUnder, getOne, patchOne, deleteOne) serves every kind.
type catalogKind[M any, In any] struct {
	rows catalog.Resource[M, In]
	// id and name are the row's id and name in the audit log.
	id   func(M) uuid.UUID
	name func(M) string
	// created is the audit summary of a create, from the row and the body it was made of.
	created func(M, In) map[string]any
	// deleted is the audit summary of a delete.
	deleted func(M) map[string]any
	// changed is the audit summary of an update; nil: changeSummary of the writable fields.
	changed func(before, after M) map[string]any
}

// catalogRoutes are the handlers of one kind's /<kind>/{id}.
type catalogRoutes struct{ get, patch, delete echo.HandlerFunc }

func routesOf[M any, In any](k catalogKind[M, In]) catalogRoutes {
	return catalogRoutes{get: getOne(k), patch: patchOne(k), delete: deleteOne(k)}
}

// createTop serves POST /<kind>: the body is the row's writable fields.
func createTop[M any, In any](k catalogKind[M, In], create func(ctx context.Context, tenantID uuid.UUID, in In) (M, error)) echo.HandlerFunc {
	return createIn(k, false, func(ctx context.Context, tenantID, _ uuid.UUID, in In) (M, error) { return create(ctx, tenantID, in) })
}

// createUnder serves POST /<parent>/{id}/<kind>: a row of the parent with that id.
func createUnder[M any, In any](k catalogKind[M, In], create func(ctx context.Context, tenantID, parentID uuid.UUID, in In) (M, error)) echo.HandlerFunc {
	return createIn(k, true, create)
}

func createIn[M any, In any](k catalogKind[M, In], underParent bool, create func(ctx context.Context, tenantID, parentID uuid.UUID, in In) (M, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		parentID, err := parentOf(c, underParent)
		if err != nil {
			return err
		}
		var in In
		if err := bindBody(c, &in); err != nil {
			return err
		}
		row, err := create(c.Request().Context(), Tenant(c).ID, parentID, in)
		if err != nil {
			return err
		}
		Audit(c, AuditEntry{Action: k.rows.Kind() + ".create", ResourceType: k.rows.Kind(), ResourceID: k.id(row).String(), ResourceName: k.name(row),
			Summary: k.created(row, in)})
		return c.JSON(nethttp.StatusCreated, row)
	}
}

// listTop serves GET /<kind>: a page of the tenant's rows, filtered by the query (filter).
func listTop[M any, F any](filter func(echo.Context) (F, error), list func(ctx context.Context, tenantID uuid.UUID, f F, p store.Page) ([]M, string, error)) echo.HandlerFunc {
	return listIn(false, filter, func(ctx context.Context, tenantID, _ uuid.UUID, f F, p store.Page) ([]M, string, error) {
		return list(ctx, tenantID, f, p)
	})
}

// listUnder serves GET /<parent>/{id}/<kind>: a page of the parent's rows.
func listUnder[M any, F any](filter func(echo.Context) (F, error), list func(ctx context.Context, tenantID, parentID uuid.UUID, f F, p store.Page) ([]M, string, error)) echo.HandlerFunc {
	return listIn(true, filter, list)
}

func listIn[M any, F any](underParent bool, filter func(echo.Context) (F, error), list func(ctx context.Context, tenantID, parentID uuid.UUID, f F, p store.Page) ([]M, string, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		parentID, err := parentOf(c, underParent)
		if err != nil {
			return err
		}
		p, err := pageParams(c)
		if err != nil {
			return err
		}
		f, err := filter(c)
		if err != nil {
			return err
		}
		rows, next, err := list(c.Request().Context(), Tenant(c).ID, parentID, f, p)
		if err != nil {
			return err
		}
		return c.JSON(nethttp.StatusOK, listOf(rows, next))
	}
}

// parentOf is the {id} of a kind served under its parent; uuid.Nil at the top level.
func parentOf(c echo.Context, underParent bool) (uuid.UUID, error) {
	if !underParent {
		return uuid.Nil, nil
	}
	return pathUUID(c, "id")
}

// getOne serves GET /<kind>/{id}.
func getOne[M any, In any](k catalogKind[M, In]) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathUUID(c, "id")
		if err != nil {
			return err
		}
		row, err := k.rows.Get(c.Request().Context(), Tenant(c).ID, id)
		if err != nil {
			return err
		}
		return c.JSON(nethttp.StatusOK, row)
	}
}

// patchOne serves PATCH /<kind>/{id}: the merge patch applies to the row's writable fields
// under the row's lock, and the result is checked by the rules of a create.
func patchOne[M any, In any](k catalogKind[M, In]) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathUUID(c, "id")
		if err != nil {
			return err
		}
		patch, err := readPatch(c)
		if err != nil {
			return err
		}
		if err := k.rows.CheckChange(slices.Collect(maps.Keys(patch))); err != nil {
			return err
		}
		before, after, err := k.rows.Update(c.Request().Context(), Tenant(c).ID, id, func(cur In) (In, error) {
			var next In
			err := applyPatch(cur, patch, &next)
			return next, err
		})
		if err != nil {
			return err
		}
		var summary map[string]any
		if k.changed != nil {
			summary = k.changed(before, after)
		} else {
			summary = changeSummary(k.rows.InputOf(before), k.rows.InputOf(after))
		}
		Audit(c, AuditEntry{Action: k.rows.Kind() + ".update", ResourceType: k.rows.Kind(), ResourceID: id.String(), ResourceName: k.name(after),
			Summary: summary})
		return c.JSON(nethttp.StatusOK, after)
	}
}

// deleteOne serves DELETE /<kind>/{id}.
func deleteOne[M any, In any](k catalogKind[M, In]) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathUUID(c, "id")
		if err != nil {
			return err
		}
		row, err := k.rows.Delete(c.Request().Context(), Tenant(c).ID, id)
		if err != nil {
			return err
		}
		Audit(c, AuditEntry{Action: k.rows.Kind() + ".delete", ResourceType: k.rows.Kind(), ResourceID: id.String(), ResourceName: k.name(row),
			Summary: k.deleted(row)})
		return c.NoContent(nethttp.StatusNoContent)
	}
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
	if path, ok := jsonfield.UnknownPath(doc, reflect.TypeOf(dst)); ok {
		p.Errors[0].Field = path
	}
	return p
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
