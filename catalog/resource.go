package catalog

import (
	"context"
	"sort"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
)

// Resource is one kind of catalog row (M) with its writable fields (In) and the use cases every
// kind shares: read one row, change it, delete it. A change or delete of a row a published
// revision uses is refused (409 in_use) while the row is locked, so no publish slips between.
type Resource[M any, In any] struct {
	kind string // store.KindRoute: usage checks and the audit log
	what string // "route": the row in messages
	c    *Catalog

	get    func(ctx context.Context, tenantID, id uuid.UUID) (M, error)
	update func(ctx context.Context, tenantID, id uuid.UUID, apply func(*M) error) (before, after M, err error)
	remove func(ctx context.Context, tenantID, id uuid.UUID, guard func(M) error) (M, error)
	// inputOf is the row's writable fields, the document a change starts from.
	inputOf func(M) In
	// apply checks a changed input against the current row and writes it into the row.
	apply func(cur *M, next In) error
	// check, when set, is a rule of the changed row that reads other rows (a gateway
	// template's certificates).
	check func(ctx context.Context, tenantID uuid.UUID, m M) error
	// fixed are fields a change may not name at all, with the reason (a product's status).
	fixed map[string]string
	// removeFailure, when set, maps the delete failures particular to the kind first.
	removeFailure func(error) error
}

// validInto is the apply of a kind whose change is checked by the rules of its create: the input
// validates into a row (P is *In, the Validate method's receiver), and set writes that row's
// writable fields into the current one.
func validInto[M any, In any, P interface {
	*In
	Validate() (M, error)
}](set func(cur *M, next M)) func(*M, In) error {
	return func(cur *M, in In) error {
		next, err := P(&in).Validate()
		if err != nil {
			return err
		}
		set(cur, next)
		return nil
	}
}

// Kind is the kind's name in usage checks and the audit log (store.KindRoute).
func (r Resource[M, In]) Kind() string { return r.kind }

// InputOf returns the writable fields of a row.
func (r Resource[M, In]) InputOf(m M) In { return r.inputOf(m) }

// Get returns one row of the tenant; a row of another tenant is not found.
func (r Resource[M, In]) Get(ctx context.Context, tenantID, id uuid.UUID) (M, error) {
	m, err := r.get(ctx, tenantID, id)
	return m, failure(err, r.what)
}

// CheckChange refuses a change that names a field no change may set, before any row is read.
func (r Resource[M, In]) CheckChange(fields []string) error {
	var v fault.Validator
	sort.Strings(fields)
	for _, f := range fields {
		if why, ok := r.fixed[f]; ok {
			v.Add(f, why)
		}
	}
	return v.Err()
}

// Update changes a row under its lock: the in-use guard first, then change turns the current
// writable fields into the new ones (a merge patch, say; its error is returned as it is), and
// the new fields are checked by the same rules as a create.
func (r Resource[M, In]) Update(ctx context.Context, tenantID, id uuid.UUID, change func(cur In) (In, error)) (before, after M, err error) {
	before, after, err = r.update(ctx, tenantID, id, func(cur *M) error {
		if err := r.c.guardUsage(ctx, tenantID, r.kind, id); err != nil {
			return err
		}
		next, err := change(r.inputOf(*cur))
		if err != nil {
			return err
		}
		if err := r.apply(cur, next); err != nil || r.check == nil {
			return err
		}
		return r.check(ctx, tenantID, *cur)
	})
	return before, after, failure(err, r.what)
}

// Delete deletes a row (and what cascades from it) unless a published revision uses it.
func (r Resource[M, In]) Delete(ctx context.Context, tenantID, id uuid.UUID) (M, error) {
	m, err := r.remove(ctx, tenantID, id, func(M) error { return r.c.guardUsage(ctx, tenantID, r.kind, id) })
	if err != nil && r.removeFailure != nil {
		err = r.removeFailure(err)
	}
	return m, failure(err, r.what)
}
