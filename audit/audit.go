// Package audit builds the audit_logs row of a mutation so that it commits in the mutation's own
// transaction: the transport (REST, say) fills in who asks and through which request before the
// use case runs, the use case names the change and writes the row inside store.InTx together
// with it. A failed insert then rolls the change back instead of leaving it unaudited.
package audit

import (
	"context"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// Entry is what a use case says about the change it made. Summary must never hold a secret:
// names, ids and changed fields, never tokens or keys.
type Entry struct {
	Action       string // e.g. product_publish.create, credential.revoke
	ResourceType string
	ResourceID   string
	ResourceName string
	Summary      map[string]any
}

// Record is the audit row of one request in the making. A nil *Record is valid and writes
// nothing: a caller that is not a request (a test, a tool) audits on its own terms.
type Record struct {
	base    models.AuditLog
	written bool
}

// New starts the record of a request from base: actor, roles, tenant, request id, method,
// path, ip, user agent and the status the request answers with when it succeeds.
func New(base models.AuditLog) *Record { return &Record{base: base} }

// Row is the complete row for e: base with e's fields, every string cut to its column and made
// valid UTF-8, so what a client sent can never make the insert fail.
func (r *Record) Row(e Entry) *models.AuditLog {
	row := r.base
	row.Action = models.Cut(e.Action, 50)
	row.ResourceType = models.Cut(e.ResourceType, 50)
	row.ResourceID = models.Cut(e.ResourceID, 100)
	row.ResourceName = models.Cut(e.ResourceName, 255)
	row.ActorRoles = append(models.StringArray{}, r.base.ActorRoles...)
	row.Summary = models.JSONMap{}
	if e.Summary != nil {
		row.Summary = Clean(e.Summary).(map[string]any)
	}
	return &row
}

// Write inserts the row of e in the transaction ctx carries: call it inside st.InTx with the
// change it describes, so both commit or neither does.
func (r *Record) Write(ctx context.Context, st *store.Store, e Entry) error {
	if r == nil {
		return nil
	}
	if err := st.InsertAudit(ctx, r.Row(e)); err != nil {
		return err
	}
	r.written = true
	return nil
}

// Written reports whether the use case wrote the row; a transport that writes a fallback row
// for requests nobody described must then not write a second one.
func (r *Record) Written() bool { return r != nil && r.written }

// Clean makes every string of an audit summary valid UTF-8 without NUL, so that the JSONB
// insert cannot fail on what a client sent.
func Clean(v any) any {
	switch x := v.(type) {
	case string:
		return models.Cut(x, -1)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[models.Cut(k, 200)] = Clean(val)
		}
		return out
	case models.JSONMap:
		return Clean(map[string]any(x))
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = Clean(val)
		}
		return out
	case []string:
		out := make([]string, len(x))
		for i, val := range x {
			out[i] = Clean(val).(string)
		}
		return out
	}
	return v
}
