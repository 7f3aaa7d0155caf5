package http

import (
	"errors"
	"fmt"
	nethttp "net/http"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/store"
)

// Problem is an RFC 9457 problem document with a stable machine code.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Code     string       `json:"code"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
	// Extra members a code documents (current_status for conflicts, for example).
	CurrentStatus string `json:"current_status,omitempty"`
}

// FieldError names one failing field of a request.
type FieldError = fault.FieldError

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// NewProblem builds a problem with the standard title of its status.
func NewProblem(status int, code, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: nethttp.StatusText(status), Status: status, Code: code, Detail: detail}
}

// Validation failures: 422 with every failing field.
func ValidationFailed(errs ...FieldError) *Problem {
	p := NewProblem(nethttp.StatusUnprocessableEntity, "validation_failed", "the request has invalid fields")
	p.Errors = errs
	return p
}

// BadRequest is a 400 with a code and, optionally, the failing fields.
func BadRequest(code, detail string, errs ...FieldError) *Problem {
	p := NewProblem(nethttp.StatusBadRequest, code, detail)
	p.Errors = errs
	return p
}

// NotFound is the one answer for rows that do not exist and rows of another tenant.
func NotFound(what string) *Problem {
	return NewProblem(nethttp.StatusNotFound, "not_found", what+" not found")
}

// Conflict is a 409; currentStatus, when set, tells the caller the state that refused it.
func Conflict(code, detail, currentStatus string) *Problem {
	p := NewProblem(nethttp.StatusConflict, code, detail)
	p.CurrentStatus = currentStatus
	return p
}

// Unauthorized is the single body of every authentication failure; the reason goes to the log.
func Unauthorized() *Problem {
	return NewProblem(nethttp.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
}

// Forbidden is a 403 for a known caller without the needed role.
func Forbidden(detail string) *Problem {
	return NewProblem(nethttp.StatusForbidden, "forbidden", detail)
}

// Unavailable is a 503 naming the dependency that is down.
func Unavailable(code, detail string) *Problem {
	return NewProblem(nethttp.StatusServiceUnavailable, code, detail)
}

// toProblem maps any error to a problem exactly once: handlers return errors, never statuses.
func toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	if f, ok := fault.As(err); ok {
		return faultProblem(f)
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case nethttp.StatusNotFound:
			return NewProblem(nethttp.StatusNotFound, "not_found", "no such route")
		case nethttp.StatusMethodNotAllowed:
			return NewProblem(nethttp.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
		case nethttp.StatusRequestEntityTooLarge:
			return NewProblem(nethttp.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than the limit")
		case nethttp.StatusUnsupportedMediaType:
			return NewProblem(nethttp.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		case nethttp.StatusBadRequest:
			return NewProblem(nethttp.StatusBadRequest, "bad_request", fmt.Sprint(he.Message))
		}
		if he.Code >= 400 && he.Code < 500 {
			return NewProblem(he.Code, "bad_request", fmt.Sprint(he.Message))
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return NotFound("resource")
	case errors.Is(err, store.ErrConflict):
		return NewProblem(nethttp.StatusConflict, "conflict", "the request conflicts with the current state")
	case store.IsUnavailable(err):
		// A dependency that is down is the client's to retry, never an internal error.
		return Unavailable("unavailable", "the database is not reachable; try again shortly")
	}
	return NewProblem(nethttp.StatusInternalServerError, "internal", "internal error; see the server log with the request id")
}

// faultStatus is the REST status of each kind of domain failure.
var faultStatus = map[fault.Kind]int{
	fault.Invalid:     nethttp.StatusUnprocessableEntity,
	fault.Malformed:   nethttp.StatusBadRequest,
	fault.NotFound:    nethttp.StatusNotFound,
	fault.Conflict:    nethttp.StatusConflict,
	fault.Forbidden:   nethttp.StatusForbidden,
	fault.Unavailable: nethttp.StatusServiceUnavailable,
}

func faultProblem(f *fault.Error) *Problem {
	status, ok := faultStatus[f.Kind]
	if !ok {
		status = nethttp.StatusInternalServerError
	}
	p := NewProblem(status, f.Code, f.Detail)
	p.Errors = f.Fields
	p.CurrentStatus = f.CurrentStatus
	return p
}
