package http

import (
	"bytes"
	"context"
	"errors"
	nethttp "net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/audit"
	"github.com/imprun/imprun-server/models"
)

// AuditEntry is what a handler says about the change it made (see audit.Entry).
type AuditEntry = audit.Entry

const ctxAudit = "imprun.audit"

// Audit records what the current request changed; the audit middleware writes it once the
// handler has succeeded.
func Audit(c echo.Context, e AuditEntry) { c.Set(ctxAudit, &e) }

func isMutating(method string) bool {
	switch method {
	case nethttp.MethodPost, nethttp.MethodPut, nethttp.MethodPatch, nethttp.MethodDelete:
		return true
	}
	return false
}

// audited gives every successful mutating request its audit_logs row, committed with the change
// itself, so no mutation goes unaudited:
//   - a route whose use case commits its own transaction (ownTransactions: it passes an
//     auditRecord to the use case, or starts or waits on a workflow) writes the row there;
//   - every other mutating route runs inside one store transaction that the audit row joins:
//     the response is held back until the transaction commits, and a failed audit insert or
//     commit rolls the change back and answers with the error instead (503 when Postgres is
//     down).
//
// A handler that did not describe its change still gets an entry derived from the method and
// route.
func (a *API) audited(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !isMutating(c.Request().Method) {
			return next(c)
		}
		if a.ownsTx[c.Request().Method+" "+c.Path()] {
			return a.auditAfter(c, next)
		}
		return a.auditInTx(c, next)
	}
}

// errNotCommitted ends the transaction of a request that answered other than 2xx: whatever it
// wrote is rolled back (a refused request changes nothing).
var errNotCommitted = errors.New("request did not succeed")

// auditInTx runs next in one transaction with its audit row and sends the response only once
// both committed.
func (a *API) auditInTx(c echo.Context, next echo.HandlerFunc) error {
	res := c.Response()
	orig, before := res.Writer, res.Header().Clone()
	held := &heldResponse{header: orig.Header()}
	res.Writer = held
	req := c.Request()
	var handlerErr error
	txErr := a.store.InTx(req.Context(), func(ctx context.Context) error {
		c.SetRequest(req.WithContext(ctx))
		if handlerErr = next(c); handlerErr != nil {
			return handlerErr
		}
		if res.Status < 200 || res.Status >= 300 {
			return errNotCommitted
		}
		if skip, _ := c.Get(ctxSkipAudit).(bool); !skip {
			if err := a.store.InsertAudit(ctx, a.auditRow(c, a.entryOf(c))); err != nil {
				return err
			}
		}
		return a.completeInTx(ctx, c, held.status, held.body.Bytes())
	})
	c.SetRequest(req)
	res.Writer = orig
	switch {
	case handlerErr != nil:
		return handlerErr // nothing was sent; the error handler answers
	case txErr == nil || errors.Is(txErr, errNotCommitted):
		return held.sendTo(orig)
	}
	if p, _ := c.Get(ctxIdempotencyKey).(*pendingKey); p != nil {
		p.completed = false // rolled back with the change
	}
	// The change and its audit row did not commit: answer with why, not with what the
	// handler had prepared.
	a.log.Error("mutation rolled back: its audit row or commit failed", "request_id", requestID(c), "err", txErr)
	res.Committed, res.Status, res.Size = false, nethttp.StatusOK, 0
	for k := range orig.Header() {
		delete(orig.Header(), k)
	}
	for k, v := range before {
		orig.Header()[k] = v
	}
	return txErr
}

// auditAfter is the audit of a route that commits its own transactions: its use case wrote the
// row with the change (an auditRecord), or another component writes it (SkipAudit); otherwise
// the row is written after the handler, as a last resort that is logged when it fails.
func (a *API) auditAfter(c echo.Context, next echo.HandlerFunc) error {
	if err := next(c); err != nil {
		return err
	}
	if status := c.Response().Status; status < 200 || status >= 300 {
		return nil
	}
	if skip, _ := c.Get(ctxSkipAudit).(bool); skip {
		return nil
	}
	if rec, _ := c.Get(ctxAuditRecord).(*audit.Record); rec.Written() {
		return nil // committed with the change itself
	}
	e := a.entryOf(c)
	if err := a.store.InsertAudit(context.WithoutCancel(c.Request().Context()), a.auditRow(c, e)); err != nil {
		a.log.Error("audit log write failed", "request_id", requestID(c), "action", e.Action, "err", err)
	}
	return nil
}

// entryOf is what the handler said it changed, or an entry derived from the route.
func (a *API) entryOf(c echo.Context) *AuditEntry {
	if e, _ := c.Get(ctxAudit).(*AuditEntry); e != nil {
		return e
	}
	return derivedAudit(c)
}

// ownTransactions marks routes whose use cases commit their own transactions (with their audit
// row) and start or wait on workflows outside them: they must not run inside the request's
// transaction, whose rows a workflow could not see before it commits.
func (a *API) ownTransactions(routes ...*echo.Route) {
	if a.ownsTx == nil {
		a.ownsTx = map[string]bool{}
	}
	for _, r := range routes {
		a.ownsTx[r.Method+" "+r.Path] = true
	}
}

// heldResponse keeps a response until its transaction commits.
type heldResponse struct {
	header nethttp.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() nethttp.Header { return h.header }

func (h *heldResponse) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = nethttp.StatusOK
	}
	return h.body.Write(b)
}

func (h *heldResponse) sendTo(w nethttp.ResponseWriter) error {
	if h.status == 0 {
		return nil
	}
	w.WriteHeader(h.status)
	_, err := w.Write(h.body.Bytes())
	return err
}

const ctxAuditRecord = "imprun.audit.record"

// auditRecord starts the audit row of this request for a use case to write in the
// transaction of its change: actor, tenant, request id, ip and user agent come from the
// request, status is what the handler answers when the use case succeeds. The audit middleware
// writes no second row once the use case wrote this one. Every mutating handler can adopt it:
// build the record first, pass it to the use case, which calls Record.Write inside store.InTx.
func (a *API) auditRecord(c echo.Context, status int) *audit.Record {
	rec := audit.New(a.auditBase(c, status))
	c.Set(ctxAuditRecord, rec)
	return rec
}

func derivedAudit(c echo.Context) *AuditEntry {
	parts := strings.Split(strings.Trim(c.Path(), "/"), "/")
	res := "unknown"
	for i := len(parts) - 1; i >= 0; i-- {
		if !strings.HasPrefix(parts[i], ":") && parts[i] != "v1" {
			res = strings.TrimSuffix(strings.ReplaceAll(parts[i], "-", "_"), "s")
			break
		}
	}
	verb := map[string]string{nethttp.MethodPost: "create", nethttp.MethodPut: "update", nethttp.MethodPatch: "update", nethttp.MethodDelete: "delete"}[c.Request().Method]
	return &AuditEntry{Action: res + "." + verb, ResourceType: res, ResourceID: c.Param("id")}
}

func (a *API) auditRow(c echo.Context, e *AuditEntry) *models.AuditLog {
	return audit.New(a.auditBase(c, c.Response().Status)).Row(*e)
}

// auditBase is the part of an audit row the request knows: who, in which tenant, through
// which request. Every string is cut to its column and made valid UTF-8: a header or claim a
// client controls must never make the insert fail.
func (a *API) auditBase(c echo.Context, status int) models.AuditLog {
	req := c.Request()
	row := models.AuditLog{
		ActorType:  models.ActorUser,
		RequestID:  models.Cut(requestID(c), 64),
		Method:     models.Cut(req.Method, 10),
		Path:       models.Cut(req.URL.Path, 500),
		StatusCode: status,
		IPAddress:  models.Cut(c.RealIP(), 45),
		UserAgent:  models.Cut(req.UserAgent(), 500),
		ActorRoles: models.StringArray{},
	}
	if p := principalOf(c); p != nil {
		row.ActorID = p.User.ID.String()
		row.ActorEmail = models.Cut(p.Email, 320)
		row.ActorRoles = append(models.StringArray{}, p.PlatformRoles...)
	}
	if ag := AgentOf(c); ag != nil {
		row.ActorType = models.ActorAgent
		row.ActorID = ag.AgentID.String()
	}
	if t := tenantOf(c); t != nil {
		id := t.ID
		row.TenantID = &id
		row.TenantSlug = models.Cut(t.Slug, 63)
		if t.Role != "" {
			row.ActorRoles = append(row.ActorRoles, "tenant:"+t.Role)
		}
	}
	return row
}

// AgentIdentity is the authenticated agent behind a /v1/agent request.
type AgentIdentity struct {
	AgentID   uuid.UUID
	ClusterID uuid.UUID
}

const ctxAgent = "imprun.agent"

// SetAgent marks the request as made by an agent (used by the agent authentication hook).
func SetAgent(c echo.Context, a *AgentIdentity) { c.Set(ctxAgent, a) }

// AgentOf returns the agent of a /v1/agent request.
func AgentOf(c echo.Context) *AgentIdentity {
	a, _ := c.Get(ctxAgent).(*AgentIdentity)
	return a
}

const ctxSkipAudit = "imprun.audit.skip"

// SkipAudit marks a mutating request whose audit entry another component writes: a
// subscription decision is audited once, by the workflow activity that applies it, whether it
// came from REST or from the Temporal CLI.
func SkipAudit(c echo.Context) { c.Set(ctxSkipAudit, true) }
