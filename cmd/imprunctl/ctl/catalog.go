package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"sort"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/imprun/imprun-server/client"
)

// Catalog is the file of `apply -f` and `diff -f`: a provider tenant's services (with their
// backends, routes and policies), global policies, gateway templates and products (with their
// plans). Every resource is keyed by its name; its other fields are the API's own (the *Fields
// schemas of http/openapi.yaml), except that references name things instead of giving ids:
// a route's backend_refs[].backend, a policy's route, a product's api_services.
type Catalog struct {
	Services []Service `yaml:"services"`
	Policies []Object  `yaml:"policies"`
	Gateways []Object  `yaml:"gateways"`
	Products []Product `yaml:"products"`
}

// Object is one resource's fields as written in the file.
type Object = map[string]any

// Service is an API service and what belongs to it.
type Service struct {
	Fields   Object   `yaml:",inline"`
	Backends []Object `yaml:"backends"`
	Routes   []Object `yaml:"routes"`
	Policies []Object `yaml:"policies"`
}

// Product is a product, its plans and its lifecycle status (draft, active, archived).
type Product struct {
	Fields Object   `yaml:",inline"`
	Status string   `yaml:"status"`
	Plans  []Object `yaml:"plans"`
}

func loadCatalog(path string) (*Catalog, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var c Catalog
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, c.validate()
}

func (c *Catalog) validate() error {
	seen := map[string]bool{}
	check := func(kind string, objs []Object) error {
		for _, o := range objs {
			n, _ := o["name"].(string)
			if n == "" {
				return fmt.Errorf("a %s without a name", kind)
			}
			if seen[kind+"/"+n] {
				return fmt.Errorf("%s %q appears twice", kind, n)
			}
			seen[kind+"/"+n] = true
		}
		return nil
	}
	var svcs, prods []Object
	for _, s := range c.Services {
		svcs = append(svcs, s.Fields)
		n, _ := s.Fields["name"].(string)
		for kind, objs := range map[string][]Object{"backend": s.Backends, "route": s.Routes, "policy": s.Policies} {
			if err := check("service "+n+" "+kind, objs); err != nil {
				return err
			}
		}
	}
	for _, p := range c.Products {
		prods = append(prods, p.Fields)
		n, _ := p.Fields["name"].(string)
		if err := check("product "+n+" plan", p.Plans); err != nil {
			return err
		}
		switch p.Status {
		case "", "draft", "active", "archived":
		default:
			return fmt.Errorf("product %s: status %q: want draft, active or archived", n, p.Status)
		}
	}
	for kind, objs := range map[string][]Object{"service": svcs, "policy": c.Policies, "gateway": c.Gateways, "product": prods} {
		if err := check(kind, objs); err != nil {
			return err
		}
	}
	return nil
}

// change is one line of the plan.
type change struct {
	op     string // + create, ~ change, - delete
	what   string
	detail []string
	rank   int // of a delete: the order deletes run in
}

// reconciler walks the catalog in dependency order, compares each resource with what the API
// has, and (unless dry) creates or patches it at once, so later resources can refer to the ids
// of earlier ones. Deletes (only with prune) run last, in reverse dependency order.
type reconciler struct {
	ctx     context.Context
	cl      *api
	dry     bool
	prune   bool
	changes []change
	deletes []pendingDelete
}

type pendingDelete struct {
	rank int
	do   func() error
}

// collection is one list of resources of the API with what can be done to its items.
type collection struct {
	what   string // display prefix, e.g. "service payments / route"
	list   func() ([]Object, error)
	create func(body []byte) (Object, error)
	update func(id uuid.UUID, body []byte) (Object, error)
	delete func(id uuid.UUID) error
	rank   int // delete order: lower first
}

// sync makes the collection hold desired (by name) and returns the id of every desired item
// ("(new NAME)" for one a dry run would create).
func (r *reconciler) sync(col collection, desired []Object) (map[string]string, map[string]Object, error) {
	ids := map[string]string{}
	actuals := map[string]Object{}
	var existing []Object
	if col.list != nil {
		var err error
		if existing, err = col.list(); err != nil {
			return nil, nil, err
		}
	}
	byName := map[string]Object{}
	for _, o := range existing {
		n, _ := o["name"].(string)
		byName[n] = o
	}
	want := map[string]bool{}
	for _, d := range desired {
		d = normalize(d)
		name, _ := d["name"].(string)
		want[name] = true
		body, _ := json.Marshal(d)
		act, ok := byName[name]
		if !ok {
			r.changes = append(r.changes, change{op: "+", what: col.what + " " + name, detail: describeFields(d)})
			ids[name] = "(new " + name + ")"
			if !r.dry {
				created, err := col.create(body)
				if err != nil {
					return nil, nil, err
				}
				ids[name], _ = created["id"].(string)
				actuals[name] = created
			}
			continue
		}
		ids[name], _ = act["id"].(string)
		actuals[name] = act
		patch := Object{}
		var lines []string
		for _, k := range sortedKeys(d) {
			if !subset(d[k], act[k]) {
				patch[k] = d[k]
				lines = append(lines, fmt.Sprintf("%s: %s => %s", k, compact(act[k]), compact(d[k])))
			}
		}
		if len(patch) == 0 {
			continue
		}
		r.changes = append(r.changes, change{op: "~", what: col.what + " " + name, detail: lines})
		if !r.dry {
			pb, _ := json.Marshal(patch)
			id, err := uuid.Parse(ids[name])
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s: id %q", col.what, name, ids[name])
			}
			updated, err := col.update(id, pb)
			if err != nil {
				return nil, nil, err
			}
			actuals[name] = updated
		}
	}
	if r.prune {
		for _, o := range existing {
			name, _ := o["name"].(string)
			if want[name] {
				continue
			}
			r.changes = append(r.changes, change{op: "-", what: col.what + " " + name, rank: col.rank})
			id, err := uuid.Parse(fmt.Sprint(o["id"]))
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s: id %v", col.what, name, o["id"])
			}
			del := col.delete
			r.deletes = append(r.deletes, pendingDelete{rank: col.rank, do: func() error { return del(id) }})
		}
	}
	return ids, actuals, nil
}

// run syncs the file's catalog in dependency order (gateways, services with what they hold,
// global policies, products with their plans), then runs the deletes.
func (r *reconciler) run(c *Catalog) error {
	if _, _, err := r.sync(r.gateways(), c.Gateways); err != nil {
		return err
	}
	var svcFields []Object
	for _, s := range c.Services {
		svcFields = append(svcFields, s.Fields)
	}
	svcIDs, _, err := r.sync(r.services(), svcFields)
	if err != nil {
		return err
	}
	for _, s := range c.Services {
		name := s.Fields["name"].(string)
		if err := r.service(name, svcIDs[name], s); err != nil {
			return err
		}
	}
	if _, _, err := r.sync(r.globalPolicies(), c.Policies); err != nil {
		return err
	}
	prodIDs, prods, err := r.sync(r.products(), productFields(c, svcIDs))
	if err != nil {
		return err
	}
	for _, p := range c.Products {
		name := p.Fields["name"].(string)
		if err := r.product(name, prodIDs[name], prods[name], p); err != nil {
			return err
		}
	}
	return r.runDeletes()
}

func (r *reconciler) gateways() collection {
	cl, ctx := r.cl, r.ctx
	return collection{what: "gateway", rank: 7,
		list: func() ([]Object, error) {
			return listObjects(func(cur *string) (responder, error) {
				return cl.ListGatewaysWithResponse(ctx, &client.ListGatewaysParams{Limit: &cl.limit, Cursor: cur})
			}, "list gateways")
		},
		create: func(b []byte) (Object, error) {
			return object(cl.CreateGatewayWithBodyWithResponse(ctx, nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdateGatewayWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeleteGatewayWithResponse(ctx, id, nil)
			return check("delete gateway", rr, err)
		},
	}
}

func (r *reconciler) services() collection {
	cl, ctx := r.cl, r.ctx
	return collection{what: "service", rank: 6,
		list: func() ([]Object, error) {
			return listObjects(func(cur *string) (responder, error) {
				return cl.ListAPIServicesWithResponse(ctx, &client.ListAPIServicesParams{Limit: &cl.limit, Cursor: cur})
			}, "list api services")
		},
		create: func(b []byte) (Object, error) {
			return object(cl.CreateAPIServiceWithBodyWithResponse(ctx, nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdateAPIServiceWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeleteAPIServiceWithResponse(ctx, id, nil)
			return check("delete api service", rr, err)
		},
	}
}

func (r *reconciler) globalPolicies() collection {
	cl, ctx := r.cl, r.ctx
	return collection{what: "global policy", rank: 3,
		list: func() ([]Object, error) {
			return listObjects(func(cur *string) (responder, error) {
				return cl.ListGlobalPoliciesWithResponse(ctx, &client.ListGlobalPoliciesParams{Limit: &cl.limit, Cursor: cur})
			}, "list global policies")
		},
		create: func(b []byte) (Object, error) {
			return object(cl.CreateGlobalPolicyWithBodyWithResponse(ctx, nil, jsonType, bytes.NewReader(b)))
		},
		update: r.updatePolicy, delete: r.deletePolicy,
	}
}

func (r *reconciler) products() collection {
	cl, ctx := r.cl, r.ctx
	return collection{what: "product", rank: 1,
		list: func() ([]Object, error) {
			return listObjects(func(cur *string) (responder, error) {
				return cl.ListProductsWithResponse(ctx, &client.ListProductsParams{Limit: &cl.limit, Cursor: cur})
			}, "list products")
		},
		create: func(b []byte) (Object, error) {
			return object(cl.CreateProductWithBodyWithResponse(ctx, nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdateProductWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeleteProductWithResponse(ctx, id, nil)
			return check("delete product", rr, err)
		},
	}
}

// productFields are the file's products with the services they link named by the ids sync gave.
func productFields(c *Catalog, svcIDs map[string]string) []Object {
	var prodFields []Object
	for _, p := range c.Products {
		f := copyObject(p.Fields)
		if refs, ok := f["api_services"].([]any); ok {
			ids := make([]any, 0, len(refs))
			for _, ref := range refs {
				n := fmt.Sprint(ref)
				if id, ok := svcIDs[n]; ok {
					ids = append(ids, id)
				} else {
					ids = append(ids, n) // an id, or a service this file does not define
				}
			}
			f["api_services"] = ids
		}
		prodFields = append(prodFields, f)
	}
	return prodFields
}

// runDeletes orders the changes shown and the deletes to run.
func (r *reconciler) runDeletes() error {
	// Deletes are shown, and run, last and in reverse dependency order.
	sort.SliceStable(r.changes, func(i, j int) bool {
		ci, cj := r.changes[i], r.changes[j]
		if (ci.op == "-") != (cj.op == "-") {
			return cj.op == "-"
		}
		return ci.op == "-" && ci.rank < cj.rank
	})
	sort.SliceStable(r.deletes, func(i, j int) bool { return r.deletes[i].rank < r.deletes[j].rank })
	if !r.dry {
		for _, d := range r.deletes {
			if err := d.do(); err != nil && !isNotFound(err) { // a cascade may have taken it
				return err
			}
		}
	}
	return nil
}

func (r *reconciler) service(name, id string, s Service) error {
	cl, ctx := r.cl, r.ctx
	sid, _ := uuid.Parse(id) // uuid.Nil for a service a dry run would create: nothing to list
	exists := sid != uuid.Nil
	prefix := "service " + name + " /"
	lister := func(f func(cur *string) (responder, error), what string) func() ([]Object, error) {
		if !exists {
			return nil
		}
		return func() ([]Object, error) { return listObjects(f, what) }
	}
	beIDs, _, err := r.sync(collection{what: prefix + " backend", rank: 5,
		list: lister(func(cur *string) (responder, error) {
			return cl.ListBackendsWithResponse(ctx, sid, &client.ListBackendsParams{Limit: &cl.limit, Cursor: cur})
		}, "list backends of "+name),
		create: func(b []byte) (Object, error) {
			return object(cl.CreateBackendWithBodyWithResponse(ctx, r.parent(sid, id), nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdateBackendWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeleteBackendWithResponse(ctx, id, nil)
			return check("delete backend", rr, err)
		},
	}, s.Backends)
	if err != nil {
		return err
	}
	routes, err := routesWithBackendIDs(name, s.Routes, beIDs)
	if err != nil {
		return err
	}
	rtIDs, _, err := r.sync(collection{what: prefix + " route", rank: 4,
		list: lister(func(cur *string) (responder, error) {
			return cl.ListRoutesWithResponse(ctx, sid, &client.ListRoutesParams{Limit: &cl.limit, Cursor: cur})
		}, "list routes of "+name),
		create: func(b []byte) (Object, error) {
			return object(cl.CreateRouteWithBodyWithResponse(ctx, r.parent(sid, id), nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdateRouteWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeleteRouteWithResponse(ctx, id, nil)
			return check("delete route", rr, err)
		},
	}, routes)
	if err != nil {
		return err
	}
	policies, err := policiesWithRouteIDs(name, s.Policies, rtIDs)
	if err != nil {
		return err
	}
	_, _, err = r.sync(collection{what: prefix + " policy", rank: 3,
		list: lister(func(cur *string) (responder, error) {
			return cl.ListServicePoliciesWithResponse(ctx, sid, &client.ListServicePoliciesParams{Limit: &cl.limit, Cursor: cur})
		}, "list policies of "+name),
		create: func(b []byte) (Object, error) {
			return object(cl.CreateServicePolicyWithBodyWithResponse(ctx, r.parent(sid, id), nil, jsonType, bytes.NewReader(b)))
		},
		update: r.updatePolicy, delete: r.deletePolicy,
	}, policies)
	return err
}

// routesWithBackendIDs are a service's routes with each backend_refs entry's backend (a name in
// the file) replaced by the id sync gave it.
func routesWithBackendIDs(name string, in []Object, beIDs map[string]string) ([]Object, error) {
	var routes []Object
	for _, rt := range in {
		rt = copyObject(rt)
		if refs, ok := rt["backend_refs"].([]any); ok {
			out := make([]any, 0, len(refs))
			for _, ref := range refs {
				m, ok := ref.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("service %s route %v: backend_refs entries are objects", name, rt["name"])
				}
				m = copyObject(m)
				if be, ok := m["backend"]; ok {
					bid, known := beIDs[fmt.Sprint(be)]
					if !known {
						return nil, fmt.Errorf("service %s route %v: no backend %v in the file", name, rt["name"], be)
					}
					delete(m, "backend")
					m["backend_id"] = bid
				}
				out = append(out, m)
			}
			rt["backend_refs"] = out
		}
		routes = append(routes, rt)
	}
	return routes, nil
}

// policiesWithRouteIDs are a service's policies with a route (a name in the file) replaced by
// the route scope and the id sync gave it.
func policiesWithRouteIDs(name string, in []Object, rtIDs map[string]string) ([]Object, error) {
	var policies []Object
	for _, p := range in {
		p = copyObject(p)
		if rt, ok := p["route"]; ok {
			rid, known := rtIDs[fmt.Sprint(rt)]
			if !known {
				return nil, fmt.Errorf("service %s policy %v: no route %v in the file", name, p["name"], rt)
			}
			delete(p, "route")
			p["scope"], p["route_id"] = "route", rid
		}
		policies = append(policies, p)
	}
	return policies, nil
}

// parent is the id of a parent created earlier in this run (sync returns it as a string).
func (r *reconciler) parent(listed uuid.UUID, id string) uuid.UUID {
	if listed != uuid.Nil {
		return listed
	}
	u, _ := uuid.Parse(id)
	return u
}

func (r *reconciler) product(name, id string, actual Object, p Product) error {
	cl, ctx := r.cl, r.ctx
	pid, _ := uuid.Parse(id)
	col := collection{what: "product " + name + " / plan", rank: 0,
		create: func(b []byte) (Object, error) {
			return object(cl.CreatePlanWithBodyWithResponse(ctx, pid, nil, jsonType, bytes.NewReader(b)))
		},
		update: func(id uuid.UUID, b []byte) (Object, error) {
			return object(cl.UpdatePlanWithBodyWithResponse(ctx, id, nil, mergePatch, bytes.NewReader(b)))
		},
		delete: func(id uuid.UUID) error {
			rr, err := cl.DeletePlanWithResponse(ctx, id, nil)
			return check("delete plan", rr, err)
		},
	}
	if pid != uuid.Nil && actual != nil {
		col.list = func() ([]Object, error) {
			return listObjects(func(cur *string) (responder, error) {
				return cl.ListPlansWithResponse(ctx, pid, &client.ListPlansParams{Limit: &cl.limit, Cursor: cur})
			}, "list plans of "+name)
		}
	}
	if _, _, err := r.sync(col, p.Plans); err != nil {
		return err
	}
	current := "draft"
	if actual != nil {
		current = fmt.Sprint(actual["status"])
	}
	if p.Status == "" || p.Status == current {
		return nil
	}
	r.changes = append(r.changes, change{op: "~", what: "product " + name, detail: []string{fmt.Sprintf("status: %q => %q", current, p.Status)}})
	if r.dry {
		return nil
	}
	var err error
	switch p.Status {
	case "active":
		rr, e := cl.ActivateProductWithResponse(ctx, pid, nil)
		err = check("activate product "+name, rr, e)
	case "draft":
		rr, e := cl.DeactivateProductWithResponse(ctx, pid, nil)
		err = check("deactivate product "+name, rr, e)
	case "archived":
		rr, e := cl.ArchiveProductWithResponse(ctx, pid, nil)
		err = check("archive product "+name, rr, e)
	}
	return err
}

func (r *reconciler) updatePolicy(id uuid.UUID, b []byte) (Object, error) {
	return object(r.cl.UpdatePolicyWithBodyWithResponse(r.ctx, id, nil, mergePatch, bytes.NewReader(b)))
}

func (r *reconciler) deletePolicy(id uuid.UUID) error {
	rr, err := r.cl.DeletePolicyWithResponse(r.ctx, id, nil)
	return check("delete policy", rr, err)
}

const (
	jsonType   = "application/json"
	mergePatch = "application/merge-patch+json"
)

// listObjects follows a list endpoint's cursors, reading items as the API wrote them.
func listObjects(page func(cursor *string) (responder, error), what string) ([]Object, error) {
	return listAll(func(cur *string) ([]Object, *string, error) {
		rr, err := page(cur)
		if err := check(what, rr, err); err != nil {
			return nil, nil, err
		}
		var p struct {
			Items      []Object `json:"items"`
			NextCursor *string  `json:"next_cursor"`
		}
		if err := json.Unmarshal(rr.GetBody(), &p); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		return p.Items, p.NextCursor, nil
	})
}

// object reads one resource from a create or update answer.
func object(rr responder, err error) (Object, error) {
	if err != nil {
		return nil, err
	}
	what := requestOf(rr)
	if err := check(what, rr, nil); err != nil {
		return nil, err
	}
	var o Object
	if err := json.Unmarshal(rr.GetBody(), &o); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return o, nil
}

// normalize gives o the shapes JSON decoding gives (numbers float64, maps map[string]any), so
// the file compares with what the API answered.
func normalize(o Object) Object {
	b, err := json.Marshal(o)
	if err != nil {
		return o
	}
	var out Object
	if json.Unmarshal(b, &out) != nil {
		return o
	}
	return out
}

func copyObject(o Object) Object {
	c := make(Object, len(o))
	for k, v := range o {
		c[k] = v
	}
	return c
}

// subset says whether the API's value act already is what the file asks for: every field the
// file gives (at any depth) is equal; fields the file leaves out (defaults the API filled in,
// ids, timestamps) do not count. Arrays are compared element by element and must be as long.
func subset(want, act any) bool {
	switch w := want.(type) {
	case map[string]any:
		a, ok := act.(map[string]any)
		if !ok {
			return len(w) == 0 && act == nil
		}
		for k, v := range w {
			if !subset(v, a[k]) {
				return false
			}
		}
		return true
	case []any:
		a, ok := act.([]any)
		if !ok {
			return len(w) == 0 && act == nil
		}
		if len(a) != len(w) {
			return false
		}
		for i := range w {
			if !subset(w[i], a[i]) {
				return false
			}
		}
		return true
	case nil:
		return act == nil
	}
	return reflect.DeepEqual(want, act)
}

func sortedKeys(o Object) []string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func compact(v any) string {
	if v == nil {
		return "(none)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func describeFields(o Object) []string {
	var lines []string
	for _, k := range sortedKeys(o) {
		if k == "name" {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s: %s", k, compact(o[k])))
	}
	return lines
}

func (a *app) printPlan(changes []change) {
	w := a.io.Stdout
	if len(changes) == 0 {
		fmt.Fprintln(w, "no changes")
		return
	}
	counts := map[string]int{}
	for _, c := range changes {
		counts[c.op]++
		fmt.Fprintf(w, "%s %s\n", c.op, c.what)
		for _, d := range c.detail {
			fmt.Fprintf(w, "    %s\n", d)
		}
	}
	fmt.Fprintf(w, "%d to create, %d to change, %d to delete\n", counts["+"], counts["~"], counts["-"])
}

type catalogFlags struct {
	file  string
	prune bool
	dry   bool
}

func (a *app) reconcile(ctx context.Context, f catalogFlags, dry bool) ([]change, error) {
	if f.file == "" {
		return nil, fmt.Errorf("-f FILE is required (- reads standard input)")
	}
	cat, err := loadCatalog(f.file)
	if err != nil {
		return nil, err
	}
	cl, err := a.api()
	if err != nil {
		return nil, err
	}
	r := &reconciler{ctx: ctx, cl: cl, dry: dry, prune: f.prune}
	err = r.run(cat)
	return r.changes, err
}

func (a *app) applyCmd() *cobra.Command {
	var f catalogFlags
	cmd := &cobra.Command{
		Use:   "apply -f catalog.yaml",
		Short: "Create or change the file's services, routes, backends, policies, gateways, products and plans so the API matches it",
		Long: "Resources are matched by name and created or patched in dependency order; nothing is deleted\n" +
			"unless --prune. Applying the same file twice changes nothing the second time (\"no changes\").\n" +
			"Exit 0 when applied (or, with --dry-run, nothing to do), 2 with --dry-run when changes are pending, 1 on error.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			changes, err := a.reconcile(c.Context(), f, f.dry)
			if err != nil {
				if len(changes) > 0 {
					fmt.Fprintln(a.io.Stdout, "up to the error:")
					a.printPlan(changes)
				}
				return err
			}
			a.printPlan(changes)
			if f.dry && len(changes) > 0 {
				return &exitError{code: ExitChanges}
			}
			if !f.dry && len(changes) > 0 {
				fmt.Fprintln(a.io.Stdout, "applied")
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&f.file, "filename", "f", "", "the catalog file (- for standard input)")
	cmd.Flags().BoolVar(&f.prune, "prune", false, "also delete what the API has and the file does not name")
	cmd.Flags().BoolVar(&f.dry, "dry-run", false, "print what would change, change nothing")
	return cmd
}

func (a *app) diffCmd() *cobra.Command {
	var f catalogFlags
	cmd := &cobra.Command{
		Use:   "diff -f catalog.yaml",
		Short: "Print what apply would change; exit 0 when nothing, 2 when changes are pending, 1 on error",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			changes, err := a.reconcile(c.Context(), f, true)
			if err != nil {
				return err
			}
			a.printPlan(changes)
			if len(changes) > 0 {
				return &exitError{code: ExitChanges}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&f.file, "filename", "f", "", "the catalog file (- for standard input)")
	cmd.Flags().BoolVar(&f.prune, "prune", false, "also show what apply --prune would delete")
	return cmd
}

// requestOf names the request a generated response answers, e.g. "POST /v1/provider/gateways".
func requestOf(rr responder) string {
	v := reflect.ValueOf(rr)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		if f := v.Elem().FieldByName("HTTPResponse"); f.IsValid() {
			if hr, ok := f.Interface().(*http.Response); ok && hr != nil && hr.Request != nil {
				return hr.Request.Method + " " + hr.Request.URL.Path
			}
		}
	}
	return "request"
}
