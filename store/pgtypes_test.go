package store

import (
	"context"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/testharness"
)

// A uuid goes to pgx as its 16 bytes through the store's plan, not through driver.Valuer's
// text; where the parameter is not a uuid (text) it still goes as its text.
func TestUUIDsEncodeAsBytes(t *testing.T) {
	m := pgtype.NewMap()
	registerTypes(m)
	id, other := uuid.New(), uuid.New()

	if p, ok := m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, id).(*uuidEncodePlan); !ok {
		t.Fatalf("a uuid.UUID is encoded by %T, not the store's plan", p)
	}
	buf, err := m.Encode(pgtype.UUIDOID, pgtype.BinaryFormatCode, id, nil)
	if err != nil || string(buf) != string(id[:]) {
		t.Fatalf("binary uuid: %x, %v; want %x", buf, err, id[:])
	}
	if _, ok := m.PlanEncode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, []uuid.UUID{id}).(uuidArrayBinaryPlan); !ok {
		t.Fatal("a []uuid.UUID is not encoded by the store's plan")
	}
	buf, err = m.Encode(pgtype.TextOID, pgtype.TextFormatCode, id, nil)
	if err != nil || string(buf) != id.String() {
		t.Fatalf("uuid as text: %q, %v; want %q", buf, err, id.String())
	}

	// The same through a pool opened by OpenDB, against PostgreSQL.
	db, err := OpenDB(testharness.Postgres(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var nilID *uuid.UUID
	var (
		same, isNull bool
		n            int
		text         string
		back         uuid.UUID
	)
	err = db.QueryRowContext(ctx, `SELECT $1::uuid = $2::uuid, cardinality($3::uuid[]), $4::uuid IS NULL, $5::text, $6::uuid`,
		id, &id, []uuid.UUID{id, other}, nilID, other, other).Scan(&same, &n, &isNull, &text, &back)
	if err != nil {
		t.Fatal(err)
	}
	if !same || n != 2 || !isNull || text != other.String() || back != other {
		t.Fatalf("got %v %d %v %q %v", same, n, isNull, text, back)
	}
	var found bool
	if err := db.QueryRowContext(ctx, `SELECT $1::uuid = ANY($2::uuid[])`, other, []uuid.UUID{id, other}).Scan(&found); err != nil || !found {
		t.Fatalf("uuid in array: %v, %v", found, err)
	}
}

// The models' array types go to pgx as the slices they are, not as their array literals, and
// reach PostgreSQL whole (a nil one as an empty array, not NULL, as before); as text they are
// still an array literal of the same elements.
func TestModelArraysEncodeAsSlices(t *testing.T) {
	m := pgtype.NewMap()
	registerTypes(m)
	ids := models.UUIDArray{uuid.New(), uuid.New()}
	roles := models.StringArray{"tenant-owner", `a "quoted", one`}
	if p, ok := m.PlanEncode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids).(uuidArrayBinaryPlan); !ok {
		t.Fatalf("a models.UUIDArray is encoded by %T, not the store's plan", p)
	}
	if p, ok := m.PlanEncode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, roles).(*stringArrayEncodePlan); !ok {
		t.Fatalf("a models.StringArray is encoded by %T, not the store's plan", p)
	}

	db, err := OpenDB(testharness.Postgres(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var (
		n1, n2       int
		second, last string
		sameAsText   bool
		empty        int
	)
	err = db.QueryRowContext(context.Background(), `SELECT cardinality($1::uuid[]), ($1::uuid[])[2]::text, cardinality($2::text[]), ($2::text[])[2],
		($3::text)::text[] = ARRAY['x', 'y'], coalesce(cardinality($4::text[]), -1) + coalesce(cardinality($5::uuid[]), -1)`, ids, roles, models.StringArray{"x", "y"}, models.StringArray(nil), models.UUIDArray(nil)).Scan(&n1, &second, &n2, &last, &sameAsText, &empty)
	if err != nil {
		t.Fatal(err)
	}
	if n1 != 2 || second != ids[1].String() || n2 != 2 || last != roles[1] || !sameAsText || empty != 0 { // cardinality of an empty array: 0
		t.Fatalf("got %d %q %d %q %v %d", n1, second, n2, last, sameAsText, empty)
	}
}

// The store's uuid[] plan writes the bytes pgx's array codec writes, for every kind of uuid
// slice; an empty one is PostgreSQL's empty array, a nil slice NULL (a nil models.UUIDArray
// empty); as text, pgx's codec still answers.
func TestUUIDArrayBinaryMatchesPgx(t *testing.T) {
	plain := pgtype.NewMap()
	m := pgtype.NewMap()
	registerTypes(m)
	for _, n := range []int{1, 2, 7, 300} {
		ids := make([]uuid.UUID, n)
		raw := make([][16]byte, n)
		for i := range ids {
			ids[i] = uuid.New()
			raw[i] = ids[i]
		}
		want, err := plain.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []any{ids, models.UUIDArray(ids), raw} {
			got, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, v, []byte("prefix"))
			if err != nil || string(got) != "prefix"+string(want) {
				t.Fatalf("%T of %d: %x, %v; want %x", v, n, got, err, want)
			}
		}
		text, err := m.Encode(pgtype.UUIDArrayOID, pgtype.TextFormatCode, raw, nil)
		if err != nil || !strings.HasPrefix(string(text), "{"+ids[0].String()) {
			t.Fatalf("as text: %q, %v", text, err)
		}
	}

	db, err := OpenDB(testharness.Postgres(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var (
		nilNull, emptyNull bool
		emptyLen, modelLen int
		third              string
	)
	err = db.QueryRowContext(context.Background(), `SELECT $1::uuid[] IS NULL, $2::uuid[] IS NULL, coalesce(cardinality($2::uuid[]), -1),
		coalesce(cardinality($3::uuid[]), -1), ($4::uuid[])[3]::text`, []uuid.UUID(nil), []uuid.UUID{}, models.UUIDArray(nil), ids).
		Scan(&nilNull, &emptyNull, &emptyLen, &modelLen, &third)
	if err != nil {
		t.Fatal(err)
	}
	if !nilNull || emptyNull || emptyLen != 0 || modelLen != 0 || third != ids[2].String() {
		t.Fatalf("got %v %v %d %d %q", nilNull, emptyNull, emptyLen, modelLen, third)
	}
}

// The store's text[], timestamptz[] and bool[] plans write the bytes pgx's array codecs write
// (a nil slice NULL, a nil time a NULL element; an empty slice is the empty array, which pgx
// writes with one dimension of no element and the store, as PostgreSQL itself, with none),
// and Postgres reads back what was sent.
func TestBulkArraysBinaryMatchPgx(t *testing.T) {
	plain := pgtype.NewMap()
	m := pgtype.NewMap()
	registerTypes(m)
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	cases := []struct {
		oid uint32
		v   any
	}{
		{pgtype.TextArrayOID, []string(nil)}, {pgtype.TextArrayOID, []string{}}, {pgtype.TextArrayOID, []string{"acked", "", `{"success": true}`, "été"}},
		{pgtype.TimestamptzArrayOID, []*time.Time(nil)}, {pgtype.TimestamptzArrayOID, []*time.Time{}},
		{pgtype.TimestamptzArrayOID, []*time.Time{at("2026-12-04T21:00:00.123456789Z"), nil, at("1999-12-31T23:59:59.5+09:00")}},
		{pgtype.TimestamptzArrayOID, []*time.Time{at("2026-12-04T21:00:00Z")}},
		{pgtype.BoolArrayOID, []bool(nil)}, {pgtype.BoolArrayOID, []bool{}}, {pgtype.BoolArrayOID, []bool{true, false, true}},
	}
	for _, c := range cases {
		want, err := plain.Encode(c.oid, pgtype.BinaryFormatCode, c.v, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Encode(c.oid, pgtype.BinaryFormatCode, c.v, []byte("prefix"))
		if want == nil {
			if err != nil || got != nil {
				t.Fatalf("%T %v: %x, %v; want NULL", c.v, c.v, got, err)
			}
			continue
		}
		if reflect.ValueOf(c.v).Len() == 0 {
			want = binary.BigEndian.AppendUint32(make([]byte, 8), binary.BigEndian.Uint32(want[8:])) // no dimension, no NULL, the element type
		}
		if err != nil || string(got) != "prefix"+string(want) {
			t.Fatalf("%T %v: %x, %v; want %x", c.v, c.v, got, err, want)
		}
	}

	db, err := OpenDB(testharness.Postgres(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	when := at("2026-12-04T21:00:00.123456Z")
	var (
		texts, times, bools string
		nullText            bool
		empty               int
	)
	err = db.QueryRowContext(context.Background(), `SELECT array_to_string($1::text[], '|'), array_to_string($2::timestamptz[] , '|', 'NULL'),
		array_to_string($3::bool[], '|'), $4::text[] IS NULL, cardinality($5::text[]) + cardinality($6::timestamptz[]) + cardinality($7::bool[])`,
		[]string{"a", "", "é"}, []*time.Time{when, nil}, []bool{true, false}, []string(nil), []string{}, []*time.Time{}, []bool{}).
		Scan(&texts, &times, &bools, &nullText, &empty)
	if err != nil {
		t.Fatal(err)
	}
	var back time.Time
	if err := db.QueryRowContext(context.Background(), `SELECT ($1::timestamptz[])[1]`, []*time.Time{when}).Scan(&back); err != nil {
		t.Fatal(err)
	}
	if texts != "a||é" || !strings.HasSuffix(times, "|NULL") || bools != "t|f" || !nullText || empty != 0 || !back.Equal(*when) {
		t.Fatalf("got %q %q %q %v %d %v", texts, times, bools, nullText, empty, back)
	}
}

// BenchmarkDeliveryArraysEncode encodes the arrays of one statement of 5,000 delivery rows
// (WriteDeliveries') with the store's type map, beside pgx's own map for all eight (the store
// paid pgx's for the six that are not uuid[] before its text[], timestamptz[] and bool[] plans).
func BenchmarkDeliveryArraysEncode(b *testing.B) {
	const n = 5000
	now := time.Now()
	ids := make([]uuid.UUID, n)
	statuses, results := make([]string, n), make([]string, n)
	sents, ackeds := make([]*time.Time, n), make([]*time.Time, n)
	passed := make([]bool, n)
	for i := range ids {
		ids[i], statuses[i], results[i] = uuid.New(), "acked", `{"message":"","success":true}`
		sents[i], ackeds[i], passed[i] = &now, &now, true
	}
	args := []struct {
		oid uint32
		v   any
	}{
		{pgtype.UUIDArrayOID, ids}, {pgtype.UUIDArrayOID, ids}, {pgtype.TextArrayOID, statuses}, {pgtype.TimestamptzArrayOID, sents},
		{pgtype.TimestamptzArrayOID, ackeds}, {pgtype.TextArrayOID, statuses}, {pgtype.TextArrayOID, results}, {pgtype.BoolArrayOID, passed},
	}
	store := pgtype.NewMap()
	registerTypes(store)
	for _, side := range []struct {
		name string
		m    *pgtype.Map
	}{{"store", store}, {"pgx", pgtype.NewMap()}} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				for _, a := range args {
					var err error
					if buf, err = side.m.Encode(a.oid, pgtype.BinaryFormatCode, a.v, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/row")
		})
	}
}
