package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestValidatorCollectsEveryField(t *testing.T) {
	var v Validator
	if v.Err() != nil {
		t.Fatal("no check failed, yet Err is not nil")
	}
	v.Check(true, "name", "required")
	v.Check(false, "name", "required")
	v.Add("port", "must be from 1 to 65535")
	e, ok := As(fmt.Errorf("wrapped: %w", v.Err()))
	if !ok || e.Kind != Invalid || e.Code != "validation_failed" || len(e.Fields) != 2 || e.Fields[1].Field != "port" {
		t.Fatalf("got %#v", e)
	}
}

func TestIsKind(t *testing.T) {
	err := fmt.Errorf("ctx: %w", Conflicting("publish_in_progress", "a run is in flight", "DEPLOYING"))
	if !IsKind(err, Conflict) || IsKind(err, NotFound) || IsKind(errors.New("plain"), Conflict) {
		t.Fatal("IsKind misclassifies")
	}
}
