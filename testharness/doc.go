// Package testharness is the shared test infrastructure of imprun-server: it starts real
// processes (a throwaway PostgreSQL cluster, the Temporal dev server, the project's own
// binaries) for integration and end-to-end tests, and never substitutes mocks for them.
//
// Every test binary that uses it must hand its TestMain to Main, so that the processes shared by
// the whole binary are stopped and their temporary directories removed when the tests end:
//
//	func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }
//
// Then, in a test:
//
//	pg := testharness.Postgres(t)     // one cluster per test binary
//	dbURL := pg.NewDatabase(t)        // a fresh empty database, dropped when t ends
//	tc := testharness.Temporal(t).Client(t)
//
// Anything that cannot be started fails the test loudly with the reason and the tail of the
// process log; nothing is ever skipped. A missing Temporal CLI is built by scripts/tools.sh on
// first use; missing PostgreSQL binaries are reported with the command that installs them.
package testharness
