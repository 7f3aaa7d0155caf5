package http

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imprun/imprun-server/store"

	"github.com/imprun/imprun-server/models"
)

const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
	maxIdempotencyKeyLen = 200
)

// idempotent makes creating POSTs safe to retry: the first response to (caller, key) is stored
// and replayed for the same body; the same key with a different body is a 422; a retry while
// the first request still runs is a 409. Failed requests are not stored, so they may be retried.
func (a *API) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key := c.Request().Header.Get(headerIdempotencyKey)
		if key == "" || c.Request().Method != nethttp.MethodPost {
			return next(c)
		}
		if len(key) > maxIdempotencyKeyLen {
			return BadRequest("invalid_header", "Idempotency-Key is too long",
				FieldError{Field: headerIdempotencyKey, Message: "at most 200 characters"})
		}
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return NewProblem(nethttp.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than the limit")
		}
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		actor := idempotencyActor(c)
		h := sha256.New()
		h.Write([]byte(c.Request().Method + " " + c.Request().URL.Path + "\n"))
		if t := tenantOf(c); t != nil {
			h.Write([]byte(t.ID.String() + "\n"))
		}
		h.Write(body)
		hash := hex.EncodeToString(h.Sum(nil))

		ctx := c.Request().Context()
		// A route that runs in the request's transaction completes its key in that
		// transaction (auditInTx): an unfinished reservation means nothing committed, so once
		// it is older than any request may run, a retry takes it over instead of waiting for a
		// process that died. Routes that commit their own transactions keep the reservation.
		var takeOver time.Duration
		if !a.ownsTx[c.Request().Method+" "+c.Path()] {
			takeOver = staleReservation
		}
		prev, reserved, err := a.store.ReserveIdempotencyKey(ctx, store.IdempotentResponse{
			ActorID: actor, Key: key, Method: c.Request().Method, Path: models.Cut(c.Request().URL.Path, 500), RequestHash: hash,
		}, takeOver)
		if errors.Is(err, store.ErrIdempotencyInFlight) {
			return Conflict("idempotency_in_flight", "a request with this Idempotency-Key is still being processed", "")
		}
		if err != nil {
			return err
		}
		if !reserved {
			if prev.RequestHash != hash {
				return NewProblem(nethttp.StatusUnprocessableEntity, "idempotency_key_reused",
					"this Idempotency-Key was used with a different request")
			}
			if prev.StatusCode == 0 {
				return Conflict("idempotency_in_flight", "a request with this Idempotency-Key is still being processed", "")
			}
			c.Response().Header().Set(headerReplayed, "true")
			return c.Blob(prev.StatusCode, prev.ContentType, prev.ResponseBody)
		}

		rec := &recorder{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rec
		pending := &pendingKey{actor: actor, key: key}
		c.Set(ctxIdempotencyKey, pending)
		err = next(c)
		bg := context.WithoutCancel(ctx)
		status := c.Response().Status
		if err != nil || status < 200 || status >= 300 {
			if rerr := a.store.ReleaseIdempotencyKey(bg, actor, key); rerr != nil {
				a.log.Error("idempotency release failed", "request_id", requestID(c), "err", rerr)
			}
			return err
		}
		if pending.completed {
			return nil // stored in the request's transaction, with the change
		}
		stored := rec.buf.Bytes()
		if redacted, ok := c.Get(ctxReplayBody).([]byte); ok {
			stored = redacted
		}
		if cerr := a.store.CompleteIdempotencyKey(bg, actor, key, status, c.Response().Header().Get(echo.HeaderContentType), stored); cerr != nil {
			a.log.Error("idempotency store failed", "request_id", requestID(c), "err", cerr)
		}
		return nil
	}
}

// staleReservation is how long an unfinished reservation may stand before a retry of a route in
// the request's transaction takes it over: longer than any request runs.
const staleReservation = 2 * time.Minute

const ctxIdempotencyKey = "imprun.idempotency.key"

// pendingKey is the reservation of the current request; completed once its response is stored.
type pendingKey struct {
	actor, key string
	completed  bool
}

// completeInTx stores the held response of the current request as its key's answer, in the
// request's transaction (ctx), so the key is finished exactly when the change commits.
func (a *API) completeInTx(ctx context.Context, c echo.Context, status int, body []byte) error {
	pending, _ := c.Get(ctxIdempotencyKey).(*pendingKey)
	if pending == nil {
		return nil
	}
	if redacted, ok := c.Get(ctxReplayBody).([]byte); ok {
		body = redacted
	}
	if err := a.store.CompleteIdempotencyKey(ctx, pending.actor, pending.key, status, c.Response().Header().Get(echo.HeaderContentType), body); err != nil {
		return err
	}
	pending.completed = true
	return nil
}

func idempotencyActor(c echo.Context) string {
	if p := principalOf(c); p != nil {
		return "user:" + p.User.ID.String()
	}
	if ag := AgentOf(c); ag != nil {
		return "agent:" + ag.AgentID.String()
	}
	return "anonymous:" + c.RealIP()
}

// recorder copies the response body while it is written.
type recorder struct {
	nethttp.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(nethttp.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nethttp.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) Unwrap() nethttp.ResponseWriter { return r.ResponseWriter }

const ctxReplayBody = "imprun.idempotency.replay"

// ReplayWithout makes an Idempotency-Key replay answer with v instead of the response sent now.
// Responses that show a secret once (registration tokens, credentials) store the resource
// without its secret: a retry learns the resource exists, and the secret is never stored.
func ReplayWithout(c echo.Context, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	c.Set(ctxReplayBody, append(b, '\n'))
}
