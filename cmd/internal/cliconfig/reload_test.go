package cliconfig

import (
	"slices"
	"testing"
)

func TestChangedFields(t *testing.T) {
	type inner struct {
		DSN    string `json:"dsn,omitempty"`
		Driver string `json:"driver,omitempty"`
	}
	type config struct {
		Listen   string   `json:"listen,omitempty"`
		Hosts    []string `json:"hosts,omitempty"`
		Store    inner    `json:"store,omitempty"`
		LogLevel string   `json:"logLevel,omitempty"`
		Secret   string   `json:"-"`
	}
	a := config{Listen: "a", Hosts: []string{"x"}, Store: inner{DSN: "d"}, Secret: "s"}
	b := config{Listen: "a", Hosts: []string{"x", "y"}, Store: inner{DSN: "e"}, LogLevel: "debug", Secret: "t"}
	if got, want := ChangedFields(a, b), []string{"hosts", "store.dsn", "logLevel"}; !slices.Equal(got, want) {
		t.Errorf("ChangedFields = %q, want %q", got, want)
	}
	if got := ChangedFields(a, a); len(got) != 0 {
		t.Errorf("ChangedFields of equal configs = %q, want none", got)
	}
}
