package store_test

import (
	"os"
	"testing"

	"github.com/imprun/imprun-server/testharness"
)

func TestMain(m *testing.M) { os.Exit(testharness.Main(m)) }
