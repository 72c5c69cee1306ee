package chart

import (
	"encoding/json"
	"testing"
)

// equalJSON compares two decoded documents by their JSON form, so that
// int64 and float64 numbers of the same value are equal.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var na, nb any
	if err := json.Unmarshal(ja, &na); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(jb, &nb); err != nil {
		t.Fatal(err)
	}
	ra, _ := json.Marshal(na)
	rb, _ := json.Marshal(nb)
	return string(ra) == string(rb)
}
