package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOneYAMLLibrary: the binary is built with the maintained YAML library, go.yaml.in/yaml/v3,
// and no other (gopkg.in/yaml.v3 is archived upstream); a dependency that brings another back
// fails here, and README "Release builds" must then say which one does.
func TestOneYAMLLibrary(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the build's packages: %v", err)
	}
	out, err := exec.Command(gotool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var yaml []string
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(strings.ToLower(p), "yaml") {
			yaml = append(yaml, p)
		}
	}
	if len(yaml) != 1 || yaml[0] != "go.yaml.in/yaml/v3" {
		t.Fatalf("YAML packages in the build: %q, want go.yaml.in/yaml/v3 alone", yaml)
	}
}
