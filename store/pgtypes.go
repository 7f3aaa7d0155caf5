package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

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
	for _, oid := range []uint32{pgtype.UUIDArrayOID, pgtype.TextArrayOID, pgtype.TimestamptzArrayOID, pgtype.BoolArrayOID} {
		if t, ok := m.TypeForOID(oid); ok {
			m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: bulkArrayCodec{t.Codec}})
		}
	}
}

// bulkArrayCodec is pgx's codec of uuid[], text[], timestamptz[] and bool[], except that the
// slices the store sends in bulk (uuids: uuid.UUID, the models' UUIDArray or their bytes;
// strings; pointers to times, nil for NULL; bools) are written in the binary array format in
// one pass. pgx's array codec plans and encodes each element through interfaces: some 3 µs a
// uuid (a broadcast's delivery rows and passed-on marks, four arrays of 10,000, spent a tenth
// of a second there), and the delivery rows' five other arrays as much again, with an
// allocation or more an element (BenchmarkDeliveryArraysEncode).
type bulkArrayCodec struct{ pgtype.Codec }

func (c bulkArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []uuid.UUID, models.UUIDArray, [][16]byte:
			if oid == pgtype.UUIDArrayOID {
				return uuidArrayBinaryPlan{}
			}
		case []string:
			if oid == pgtype.TextArrayOID {
				return textArrayBinaryPlan{}
			}
		case []*time.Time:
			if oid == pgtype.TimestamptzArrayOID {
				return timestamptzArrayBinaryPlan{}
			}
		case []bool:
			if oid == pgtype.BoolArrayOID {
				return boolArrayBinaryPlan{}
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// appendArrayHeader writes a one-dimensional binary array's header: dimensions, whether an
// element is NULL, the element type, then (when it has elements) their count and lower bound.
// An empty array has no dimension.
func appendArrayHeader(buf []byte, n int, hasNull bool, elem uint32) []byte {
	dims := uint32(0)
	if n > 0 {
		dims = 1
	}
	nulls := uint32(0)
	if hasNull {
		nulls = 1
	}
	buf = binary.BigEndian.AppendUint32(buf, dims)
	buf = binary.BigEndian.AppendUint32(buf, nulls)
	buf = binary.BigEndian.AppendUint32(buf, elem)
	if n == 0 {
		return buf
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1) // lower bound
}

// textArrayBinaryPlan writes a []string as text[] (a nil one is NULL, as pgx has it): each
// element its length and bytes.
type textArrayBinaryPlan struct{}

func (textArrayBinaryPlan) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]string)
	if v == nil {
		return nil, nil
	}
	size := 0
	for _, e := range v {
		size += 4 + len(e)
	}
	buf = slices.Grow(appendArrayHeader(buf, len(v), false, pgtype.TextOID), size)
	for _, e := range v {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(e)))
		buf = append(buf, e...)
	}
	return buf, nil
}

// timestamptzArrayBinaryPlan writes a []*time.Time as timestamptz[], a nil element NULL:
// each time as microseconds since 2000-01-01 UTC, PostgreSQL's epoch (a nil slice is NULL).
type timestamptzArrayBinaryPlan struct{}

// pgEpochMicros is PostgreSQL's epoch, 2000-01-01 UTC, in microseconds since Unix's.
const pgEpochMicros = 946684800 * 1000000

func (timestamptzArrayBinaryPlan) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]*time.Time)
	if v == nil {
		return nil, nil
	}
	hasNull := slices.Contains(v, nil)
	buf = slices.Grow(appendArrayHeader(buf, len(v), hasNull, pgtype.TimestamptzOID), len(v)*12)
	for _, t := range v {
		if t == nil {
			buf = binary.BigEndian.AppendUint32(buf, 0xFFFFFFFF) // -1: NULL
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, 8)
		us := t.Unix()*1000000 + int64(t.Nanosecond())/1000
		buf = binary.BigEndian.AppendUint64(buf, uint64(us-pgEpochMicros))
	}
	return buf, nil
}

// boolArrayBinaryPlan writes a []bool as bool[] (a nil one is NULL).
type boolArrayBinaryPlan struct{}

func (boolArrayBinaryPlan) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]bool)
	if v == nil {
		return nil, nil
	}
	buf = slices.Grow(appendArrayHeader(buf, len(v), false, pgtype.BoolOID), len(v)*5)
	for _, b := range v {
		buf = binary.BigEndian.AppendUint32(buf, 1)
		if b {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
	}
	return buf, nil
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
	buf = slices.Grow(appendArrayHeader(buf, len(ids), false, pgtype.UUIDOID), len(ids)*20)
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
