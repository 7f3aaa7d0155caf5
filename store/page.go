package store

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Page asks for one page of a keyset-paginated list, newest first.
type Page struct {
	Limit int
	After *Cursor
}

// Cursor is the position after which the next page starts: the (created_at, id) of the last
// row of the previous page. Keyset pagination keeps pages stable while rows are inserted.
type Cursor struct {
	CreatedAt time.Time `json:"t"`
	ID        uuid.UUID `json:"i"`
}

// ErrBadCursor is returned for a cursor this server did not make.
var ErrBadCursor = errors.New("invalid cursor")

// EncodeCursor makes the opaque cursor string.
func EncodeCursor(c Cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor parses a cursor string.
func DecodeCursor(s string) (*Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	var c Cursor
	if err := json.Unmarshal(b, &c); err != nil || c.ID == uuid.Nil || c.CreatedAt.IsZero() {
		return nil, ErrBadCursor
	}
	return &c, nil
}

// Paginate applies p to q on table (alias) columns created_at and id. It fetches one row more
// than asked so the caller knows whether there is a next page.
func Paginate(q *gorm.DB, table string, p Page) *gorm.DB {
	if p.After != nil {
		q = q.Where("("+table+".created_at, "+table+".id) < (?, ?)", p.After.CreatedAt, p.After.ID)
	}
	return q.Order(table + ".created_at DESC").Order(table + ".id DESC").Limit(p.Limit + 1)
}

// Keyed is a row that can be paginated.
type Keyed interface {
	PageKey() (time.Time, uuid.UUID)
}

// Trim cuts the extra row fetched by Paginate and returns the next cursor ("" on the last page).
func Trim[T Keyed](rows []T, p Page) ([]T, string) {
	if len(rows) <= p.Limit {
		return rows, ""
	}
	rows = rows[:p.Limit]
	t, id := rows[len(rows)-1].PageKey()
	return rows, EncodeCursor(Cursor{CreatedAt: t, ID: id})
}

// page reads one keyset page of q: every list of the store.
func page[T Keyed](q *gorm.DB, table string, p Page) ([]T, string, error) {
	var rows []T
	if err := Paginate(q, table, p).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := Trim(rows, p)
	return rows, next, nil
}

// whereSet and wherePtr add column = value to q when the value is set: the optional filters of
// a list.
func whereSet(q *gorm.DB, column, value string) *gorm.DB {
	if value == "" {
		return q
	}
	return q.Where(column+" = ?", value)
}

func wherePtr[V any](q *gorm.DB, column string, value *V) *gorm.DB {
	if value == nil {
		return q
	}
	return q.Where(column+" = ?", *value)
}
