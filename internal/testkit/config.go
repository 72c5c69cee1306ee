package testkit

import (
	"fmt"
	"reflect"
	"testing"
)

// validator is a component config; Validate reports its first problem.
type validator interface{ Validate() error }

// ValidateKeepsConfig calls Validate on each of configs (each a
// pointer, so that a method with a pointer receiver could write through
// it) and fails t if a call changed its config: Validate only reports, and
// defaults are resolved by the component's constructor. Configs whose
// function fields are set cannot be compared and must not be passed.
func ValidateKeepsConfig(t *testing.T, configs ...validator) {
	t.Helper()
	for i, cfg := range configs {
		t.Run(fmt.Sprintf("%d %T", i, cfg), func(t *testing.T) {
			v := reflect.ValueOf(cfg)
			if v.Kind() != reflect.Pointer {
				t.Fatalf("%T is not a pointer", cfg)
			}
			before := v.Elem().Interface()
			_ = cfg.Validate()
			if after := v.Elem().Interface(); !reflect.DeepEqual(before, after) {
				t.Errorf("Validate changed the config:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}
