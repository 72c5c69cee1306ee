// Package testkit holds what tests across the module share: CA trees built
// in one line (keys generated once per process and reused, so tests stay
// fast).
package testkit
