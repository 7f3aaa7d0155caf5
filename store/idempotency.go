package store

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"
)

// IdempotentResponse is the stored first response of an Idempotency-Key request.
type IdempotentResponse struct {
	ActorID      string
	Key          string
	Method       string
	Path         string
	RequestHash  string
	StatusCode   int
	ContentType  string
	ResponseBody []byte
}

// TableName maps the row to its table.
func (IdempotentResponse) TableName() string { return "idempotency_keys" }

// Outcomes of ReserveIdempotencyKey.
var (
	ErrIdempotencyInFlight = errors.New("a request with this idempotency key is still in flight")
)

// ReserveIdempotencyKey claims (actor, key) for a new request. When the key was used before it
// returns the stored row (StatusCode 0 means the first request is still running) and
// reserved=false. takeOverAfter > 0 lets a new request take over a reservation of the same
// request that has been in flight longer than that: its process died, and the caller knows
// (see the REST idempotency middleware) that an unfinished reservation means nothing committed.
func (s *Store) ReserveIdempotencyKey(ctx context.Context, r IdempotentResponse, takeOverAfter time.Duration) (stored *IdempotentResponse, reserved bool, err error) {
	res := s.db(ctx).Exec(`INSERT INTO idempotency_keys (actor_id, key, method, path, request_hash)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (actor_id, key) DO UPDATE SET created_at = now()
		WHERE ? > 0 AND idempotency_keys.status_code = 0 AND idempotency_keys.request_hash = EXCLUDED.request_hash
		  AND idempotency_keys.created_at < now() - make_interval(secs => ?)`,
		r.ActorID, r.Key, r.Method, r.Path, r.RequestHash, takeOverAfter.Seconds(), takeOverAfter.Seconds())
	if res.Error != nil {
		return nil, false, res.Error
	}
	if res.RowsAffected == 1 {
		return nil, true, nil
	}
	var prev IdempotentResponse
	if err := s.db(ctx).Where("actor_id = ? AND key = ?", r.ActorID, r.Key).Take(&prev).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			// Released between our insert and read: the caller may simply retry.
			return nil, false, ErrIdempotencyInFlight
		}
		return nil, false, err
	}
	return &prev, false, nil
}

// CompleteIdempotencyKey stores the response of the reserved request.
func (s *Store) CompleteIdempotencyKey(ctx context.Context, actorID, key string, status int, contentType string, body []byte) error {
	return s.db(ctx).Exec(`UPDATE idempotency_keys SET status_code = ?, content_type = ?, response_body = ? WHERE actor_id = ? AND key = ?`,
		status, contentType, body, actorID, key).Error
}

// ReleaseIdempotencyKey forgets a reservation whose request failed, so a retry may run again.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, actorID, key string) error {
	return s.db(ctx).Exec(`DELETE FROM idempotency_keys WHERE actor_id = ? AND key = ? AND status_code = 0`, actorID, key).Error
}
