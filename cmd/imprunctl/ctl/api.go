package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/client"
)

// api is the generated client with the caller's token and tenant on every request.
type api struct {
	*client.ClientWithResponses
	server string
	limit  int // page size of list requests
}

func (a *app) api() (*api, error) {
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	if s.Token == "" {
		return nil, errors.New("not logged in: run `imprunctl login --token T` (or set IMPRUN_TOKEN)")
	}
	cl, err := newAPI(s)
	if err == nil && a.pageSize > 0 {
		cl.limit = a.pageSize
	}
	return cl, err
}

func newAPI(s Config) (*api, error) {
	server := strings.TrimRight(s.Server, "/")
	c, err := client.NewClientWithResponses(server,
		client.WithHTTPClient(&http.Client{Timeout: 60 * time.Second}),
		client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			if s.Token != "" {
				r.Header.Set("Authorization", "Bearer "+s.Token)
			}
			if s.Tenant != "" && r.Header.Get("X-Tenant") == "" {
				r.Header.Set("X-Tenant", s.Tenant)
			}
			r.Header.Set("User-Agent", "imprunctl")
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return &api{ClientWithResponses: c, server: server, limit: maxPage}, nil
}

// responder is what every generated response has.
type responder interface {
	StatusCode() int
	GetBody() []byte
}

// check turns a transport error or a non-2xx response into an error carrying the problem
// document's words.
func check(what string, r responder, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code := r.StatusCode(); code >= 200 && code < 300 {
		return nil
	}
	return problemError(what, r.StatusCode(), r.GetBody())
}

// APIError is a refused request, with the RFC 9457 problem the API answered.
type APIError struct {
	What    string
	Status  int
	Problem client.Problem
}

func (e *APIError) Error() string {
	p := e.Problem
	msg := fmt.Sprintf("%s: %d %s", e.What, e.Status, p.Code)
	if p.Detail != nil && *p.Detail != "" {
		msg += ": " + *p.Detail
	} else if p.Title != "" {
		msg += ": " + p.Title
	}
	if p.Errors != nil {
		for _, fe := range *p.Errors {
			msg += fmt.Sprintf("\n  %s: %s", fe.Field, fe.Message)
		}
	}
	if p.CurrentStatus != nil {
		msg += " (current status " + *p.CurrentStatus + ")"
	}
	return msg
}

func problemError(what string, status int, body []byte) error {
	e := &APIError{What: what, Status: status}
	if json.Unmarshal(body, &e.Problem) != nil || e.Problem.Code == "" {
		e.Problem.Code = http.StatusText(status)
		s := strings.TrimSpace(string(body))
		if len(s) > 300 {
			s = s[:300]
		}
		e.Problem.Detail = &s
	}
	return e
}

func isNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

func asAPIError(err error, target **APIError) bool { return errors.As(err, target) }

// maxPage is the largest page the API gives.
const maxPage = 100

// listAll follows next_cursor until the last page.
func listAll[T any](page func(cursor *string) ([]T, *string, error)) ([]T, error) {
	var all []T
	var cursor *string
	for {
		items, next, err := page(cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == nil || *next == "" {
			return all, nil
		}
		cursor = next
	}
}

// resolveID takes a UUID as it is, or finds the one item named name.
func resolveID[T any](kind, ref string, list func() ([]T, error), name func(T) string, id func(T) uuid.UUID) (uuid.UUID, error) {
	if u, err := uuid.Parse(ref); err == nil {
		return u, nil
	}
	items, err := list()
	if err != nil {
		return uuid.Nil, err
	}
	var found []uuid.UUID
	for _, it := range items {
		if name(it) == ref {
			found = append(found, id(it))
		}
	}
	switch len(found) {
	case 0:
		return uuid.Nil, fmt.Errorf("no %s named %q", kind, ref)
	case 1:
		return found[0], nil
	}
	return uuid.Nil, fmt.Errorf("%d %ss are named %q; use the id", len(found), kind, ref)
}
