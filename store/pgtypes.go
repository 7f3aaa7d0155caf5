package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imprun/imprun-server/models"
)

// OpenDB opens a database/sql pool of pgx connections on url, each with the store's types
// registered (registerTypes). It does not connect; the first statement does.
func OpenDB(url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	return stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(func(_ context.Context, c *pgx.Conn) error {
		registerTypes(c.TypeMap())
		return nil
	})), nil
}

// registerTypes makes a connection's pgx type map encode uuid.UUID (alone or in a slice) as
// the 16 bytes it is. Without it a uuid.UUID is a driver.Valuer whose value is its text: pgx
// first fails to encode that text as a binary uuid, building an error with fmt, and then
// parses it back. That was a tenth of a connecting agent's CPU, every element of a
// broadcast's 10,000-uuid array, and 8% of the control plane's CPU in concurrent publishes
// (every GORM statement with a uuid argument). A parameter of another type (a uuid compared
// as text) finds no plan for the bytes and falls back to the text, as before. A uuid[]
// parameter is written by uuidArrayCodec; the slice wraps below serve other array targets.
func registerTypes(m *pgtype.Map) {
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapUUID}, m.TryWrapEncodePlanFuncs...)
	if t, ok := m.TypeForOID(pgtype.UUIDArrayOID); ok {
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: uuidArrayCodec{t.Codec}})
	}
}

// uuidArrayCodec is pgx's uuid[] codec, except that a slice of uuids (uuid.UUID, the models'
// UUIDArray, or their bytes) is written in the binary array format in one pass. pgx's array
// codec plans and encodes each element through interfaces, some 3 µs a uuid: a broadcast's
// delivery rows and passed-on marks (four arrays of 10,000) spent a tenth of a second there.
type uuidArrayCodec struct{ pgtype.Codec }

func (c uuidArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []uuid.UUID, models.UUIDArray, [][16]byte:
			return uuidArrayBinaryPlan{}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// uuidArrayBinaryPlan writes PostgreSQL's binary array: dimensions, no nulls, the uuid
// element type, then each element as its length and 16 bytes. A nil []uuid.UUID or
// [][16]byte is NULL, as pgx has it; a nil models.UUIDArray is an empty array, as its Value
// says.
type uuidArrayBinaryPlan struct{}

func (uuidArrayBinaryPlan) Encode(value any, buf []byte) ([]byte, error) {
	switch v := value.(type) {
	case []uuid.UUID:
		if v == nil {
			return nil, nil
		}
		return appendUUIDArray(buf, v), nil
	case models.UUIDArray:
		return appendUUIDArray(buf, v), nil
	case [][16]byte:
		if v == nil {
			return nil, nil
		}
		return appendUUIDArray(buf, v), nil
	}
	return nil, fmt.Errorf("uuid[]: cannot encode %T", value)
}

func appendUUIDArray[T ~[16]byte](buf []byte, ids []T) []byte {
	dims := uint32(0)
	if len(ids) > 0 {
		dims = 1
	}
	buf = binary.BigEndian.AppendUint32(buf, dims)
	buf = binary.BigEndian.AppendUint32(buf, 0) // no nulls
	buf = binary.BigEndian.AppendUint32(buf, pgtype.UUIDOID)
	if len(ids) == 0 {
		return buf
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(ids)))
	buf = binary.BigEndian.AppendUint32(buf, 1) // lower bound
	buf = slices.Grow(buf, len(ids)*20)
	for _, id := range ids {
		buf = binary.BigEndian.AppendUint32(buf, 16)
		buf = append(buf, id[:]...)
	}
	return buf
}

func tryWrapUUID(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	switch v := value.(type) {
	case uuid.UUID:
		return &uuidEncodePlan{}, [16]byte(v), true
	case []uuid.UUID:
		return &uuidSliceEncodePlan{}, uuidBytes(v), true
	case models.UUIDArray:
		return &uuidArrayEncodePlan{}, modelUUIDs(v), true
	case models.StringArray:
		return &stringArrayEncodePlan{}, modelStrings(v), true
	}
	return nil, nil, false
}

// The models' array types are driver.Valuers whose value is an array literal, which pgx first
// fails to encode as a binary array (building an error) and then parses back: a twentieth of
// the control plane's CPU in concurrent publishes (the audit rows' roles, a publish's
// services). As the slices they are, they encode in one pass; a nil one is an empty array, as
// its Value says, not NULL.
type uuidArrayEncodePlan struct{ next pgtype.EncodePlan }

func (p *uuidArrayEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidArrayEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode(modelUUIDs(value.(models.UUIDArray)), buf)
}

func modelUUIDs(a models.UUIDArray) [][16]byte {
	if a == nil {
		return [][16]byte{}
	}
	return uuidBytes(a)
}

func modelStrings(a models.StringArray) []string {
	if a == nil {
		return []string{}
	}
	return a
}

type stringArrayEncodePlan struct{ next pgtype.EncodePlan }

func (p *stringArrayEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *stringArrayEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode(modelStrings(value.(models.StringArray)), buf)
}

type uuidEncodePlan struct{ next pgtype.EncodePlan }

func (p *uuidEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode([16]byte(value.(uuid.UUID)), buf)
}

type uuidSliceEncodePlan struct{ next pgtype.EncodePlan }

func (p *uuidSliceEncodePlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidSliceEncodePlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode(uuidBytes(value.([]uuid.UUID)), buf)
}

func uuidBytes(ids []uuid.UUID) [][16]byte {
	if ids == nil {
		return nil
	}
	b := make([][16]byte, len(ids))
	for i := range ids {
		b[i] = ids[i]
	}
	return b
}
