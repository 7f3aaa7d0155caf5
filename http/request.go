package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	nethttp "net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/jsonfield"
	"github.com/imprun/imprun-server/store"
)

// bindJSON decodes the JSON body into dst strictly: the body must be JSON, well formed, one
// value, with no field dst does not know. Failures are 400/415 problems naming the field.
func bindJSON(c echo.Context, dst any) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return NewProblem(nethttp.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json")
		}
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		var mbe *nethttp.MaxBytesError
		if errors.As(err, &mbe) {
			return NewProblem(nethttp.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than the limit")
		}
		return BadRequest("malformed_json", "the body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return BadRequest("malformed_json", "a JSON body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(err)
	}
	if dec.More() {
		return BadRequest("malformed_json", "the body holds more than one JSON value")
	}
	return nil
}

func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return BadRequest("malformed_json", fmt.Sprintf("malformed JSON at offset %d", syn.Offset))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return BadRequest("invalid_type", "a field has the wrong type",
			FieldError{Field: field, Message: "must be " + jsonKind(typ.Type.Kind().String())})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return BadRequest("unknown_field", "the body has a field this endpoint does not know",
			FieldError{Field: field, Message: "unknown field"})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("malformed_json", "the JSON body ends early")
	}
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	return BadRequest("malformed_json", "the body is not valid JSON")
}

// jsonKind says in words what JSON a Go kind expects ("a number").
func jsonKind(k string) string { return jsonfield.Kind(k) }

// pathUUID parses a UUID path parameter.
func pathUUID(c echo.Context, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil {
		return uuid.Nil, BadRequest("invalid_id", "the path holds a malformed id", FieldError{Field: name, Message: "must be a UUID"})
	}
	return id, nil
}

// queryUUID parses an optional UUID query parameter.
func queryUUID(c echo.Context, name string) (*uuid.UUID, error) {
	s := c.QueryParam(name)
	if s == "" {
		return nil, nil
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return nil, BadRequest("invalid_query", "a query parameter is malformed", FieldError{Field: name, Message: "must be a UUID"})
	}
	return &id, nil
}

// queryEnum reads an optional query parameter that must be one of allowed.
func queryEnum(c echo.Context, name string, allowed ...string) (string, error) {
	s := c.QueryParam(name)
	if s == "" {
		return "", nil
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", BadRequest("invalid_query", "a query parameter is out of range",
		FieldError{Field: name, Message: "must be one of " + strings.Join(allowed, ", ")})
}

const (
	defaultPageSize = 20
	maxPageSize     = 100
)

// pageParams reads ?limit= and ?cursor=.
func pageParams(c echo.Context) (store.Page, error) {
	p := store.Page{Limit: defaultPageSize}
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageSize {
			return p, BadRequest("invalid_query", "limit is out of range",
				FieldError{Field: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d", maxPageSize)})
		}
		p.Limit = n
	}
	if s := c.QueryParam("cursor"); s != "" {
		cur, err := store.DecodeCursor(s)
		if err != nil {
			return p, BadRequest("invalid_query", "cursor is not one this server made",
				FieldError{Field: "cursor", Message: "invalid cursor"})
		}
		p.After = cur
	}
	return p, nil
}

// List is the body of every list response.
type List[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func listOf[T any](items []T, next string) List[T] {
	if items == nil {
		items = []T{}
	}
	l := List[T]{Items: items}
	if next != "" {
		l.NextCursor = &next
	}
	return l
}

// validator collects field failures of one request: fault.Validator under the names the
// handlers outside the catalog use.
type validator struct{ fault.Validator }

func (v *validator) check(ok bool, field, msg string) { v.Check(ok, field, msg) }

func (v *validator) add(field, msg string) { v.Add(field, msg) }

// err is nil when every check passed, else one validation_failed naming every field.
func (v *validator) err() error { return v.Err() }
