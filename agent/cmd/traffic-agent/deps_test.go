package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent runs in every intercepted pod: it must stay small, so the Kubernetes API types stay
// out of it (the injector that needs them lives in cluster/inject).
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		for _, banned := range []string{"k8s.io/", "teledock.dev/teledock/cluster/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("traffic-agent imports %s", dep)
			}
		}
	}
}

// Built as the Makefile builds it, the agent leaves out gRPC's tracing, which alone brings
// golang.org/x/net/trace, html/template and text/template (~3 MB of the binary).
func TestNoTracing(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-tags=grpcnotrace", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		switch dep {
		case "golang.org/x/net/trace", "html/template", "text/template":
			t.Errorf("traffic-agent built with grpcnotrace imports %s", dep)
		}
	}
}
