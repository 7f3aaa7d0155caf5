// Package fault holds the errors domain packages return: a kind (what the caller did wrong, or
// which dependency failed), a stable machine code, a detail for people and the failing fields.
// It knows nothing of HTTP or gRPC; each transport maps a kind to its status in one place
// (http.toProblem for REST).
package fault

import (
	"errors"
	"fmt"
)

// Kind is the class of a failure, which a transport turns into a status.
type Kind int

const (
	// Invalid: the input breaks a rule (422 in REST); Fields names each failing field.
	Invalid Kind = iota + 1
	// Malformed: the input cannot be read at all (400 in REST).
	Malformed
	// NotFound: the resource does not exist or belongs to another tenant (404).
	NotFound
	// Conflict: the resource's current state refuses the change (409).
	Conflict
	// Forbidden: a known caller without the needed role (403).
	Forbidden
	// Unavailable: a dependency is down; the caller should retry (503).
	Unavailable
)

// FieldError names one failing field of an input.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a domain failure.
type Error struct {
	Kind   Kind
	Code   string // stable, snake_case: validation_failed, not_found, publish_in_progress...
	Detail string
	Fields []FieldError
	// CurrentStatus, for conflicts, is the state that refused the change.
	CurrentStatus string
}

func (e *Error) Error() string {
	if len(e.Fields) > 0 {
		return fmt.Sprintf("%s: %s (%s: %s)", e.Code, e.Detail, e.Fields[0].Field, e.Fields[0].Message)
	}
	return e.Code + ": " + e.Detail
}

// As returns err's *Error when it has one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// IsKind reports whether err is a fault of kind k.
func IsKind(err error, k Kind) bool {
	e, ok := As(err)
	return ok && e.Kind == k
}

// ValidationFailed is the failure of every input rule, with every failing field.
func ValidationFailed(fields ...FieldError) *Error {
	return &Error{Kind: Invalid, Code: "validation_failed", Detail: "the request has invalid fields", Fields: fields}
}

// Invalidf is a rule failure with its own code, not tied to one field.
func Invalidf(code, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// BadInput is input that cannot be read (400).
func BadInput(code, detail string, fields ...FieldError) *Error {
	return &Error{Kind: Malformed, Code: code, Detail: detail, Fields: fields}
}

// Missing is the one answer for rows that do not exist and rows of another tenant.
func Missing(what string) *Error {
	return &Error{Kind: NotFound, Code: "not_found", Detail: what + " not found"}
}

// Conflicting is a refused change; current, when set, is the state that refused it.
func Conflicting(code, detail, current string) *Error {
	return &Error{Kind: Conflict, Code: code, Detail: detail, CurrentStatus: current}
}

// Denied is a known caller without the needed role.
func Denied(detail string) *Error { return &Error{Kind: Forbidden, Code: "forbidden", Detail: detail} }

// Down names a dependency that is not reachable.
func Down(code, detail string) *Error { return &Error{Kind: Unavailable, Code: code, Detail: detail} }

// Validator collects field failures so a caller sees every one at once.
type Validator struct{ errs []FieldError }

// Check records msg for field unless ok.
func (v *Validator) Check(ok bool, field, msg string) {
	if !ok {
		v.Add(field, msg)
	}
}

// Add records msg for field.
func (v *Validator) Add(field, msg string) {
	v.errs = append(v.errs, FieldError{Field: field, Message: msg})
}

// Failed reports whether any field failed.
func (v *Validator) Failed() bool { return len(v.errs) > 0 }

// Fields returns the failures so far.
func (v *Validator) Fields() []FieldError { return v.errs }

// Err is nil when every check passed, else one ValidationFailed naming every field.
func (v *Validator) Err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return ValidationFailed(v.errs...)
}
