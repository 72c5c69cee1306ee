// Command genmanifests writes the files generated from the Helm chart
// (package test/chart): `make manifests` runs it.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshca/meshca/test/chart"
)

func main() {
	files, err := chart.Generated()
	if err != nil {
		fmt.Fprintln(os.Stderr, "genmanifests:", err)
		os.Exit(1)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(chart.Root(), name), data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "genmanifests:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", name)
	}
}
