package http

import (
	"context"
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

// audited writes an audit_logs row for every successful mutating request whose handler did not
// commit one with its change (see auditRecord). A handler that did not describe its change
// still gets an entry derived from the method and route, so no mutation goes unrecorded.
func (a *API) audited(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !isMutating(c.Request().Method) {
			return next(c)
		}
		if err := next(c); err != nil {
			return err
		}
		status := c.Response().Status
		if status < 200 || status >= 300 {
			return nil
		}
		if skip, _ := c.Get(ctxSkipAudit).(bool); skip {
			return nil
		}
		if rec, _ := c.Get(ctxAuditRecord).(*audit.Record); rec.Written() {
			return nil // committed with the change itself
		}
		e, _ := c.Get(ctxAudit).(*AuditEntry)
		if e == nil {
			e = derivedAudit(c)
		}
		row := a.auditRow(c, e)
		// The response is already written: a failed audit insert is logged loudly but can't
		// turn into an error response any more. Handlers that pass an auditRecord to their use
		// case don't get here: their row commits with the change or the change fails.
		if err := a.store.InsertAudit(context.WithoutCancel(c.Request().Context()), row); err != nil {
			a.log.Error("audit log write failed", "request_id", requestID(c), "action", e.Action, "err", err)
		}
		return nil
	}
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
