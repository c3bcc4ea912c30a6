package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseComposeArgs(t *testing.T) {
	ca, err := parseComposeArgs([]string{"-f", "a.yaml", "--file=b.yaml", "-fc.yaml", "-p", "proj", "--profile", "debug",
		"--env-file", "x.env", "--project-directory", "/p", "--ansi", "never", "--dry-run", "--timeout", "30s", "up", "-d", "web"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ca.load.ConfigPaths, ",") != "a.yaml,b.yaml,c.yaml" || ca.load.ProjectName != "proj" ||
		strings.Join(ca.load.Profiles, ",") != "debug" || ca.load.ProjectDir != "/p" || ca.timeout != 30*time.Second {
		t.Errorf("load = %+v, timeout %s", ca.load, ca.timeout)
	}
	// -f and -p are written anew from the loaded project; the other global flags pass on as given.
	if strings.Join(ca.global, " ") != "--profile debug --env-file x.env --project-directory /p --ansi never --dry-run" {
		t.Errorf("global = %q", ca.global)
	}
	if ca.command != "up" || strings.Join(ca.args, " ") != "-d web" {
		t.Errorf("command %q args %q", ca.command, ca.args)
	}

	// docker compose runs a provider like this.
	ca, err = parseComposeArgs([]string{"compose", "--project-name=shop", "up", "--namespace=dev", "teledock"}[1:])
	if err != nil || ca.load.ProjectName != "shop" || ca.command != "up" || strings.Join(ca.args, " ") != "--namespace=dev teledock" {
		t.Errorf("provider args: %+v %v", ca, err)
	}

	ca, err = parseComposeArgs([]string{"generate", "-o", "json"})
	if err != nil || ca.output != "json" {
		t.Errorf("generate -o json: %+v %v", ca, err)
	}
	for _, bad := range [][]string{{}, {"--bogus", "up"}, {"-f"}, {"generate", "-o", "yaml"}, {"--timeout", "0s", "up"}, {"generate", "extra"}} {
		if _, err := parseComposeArgs(bad); err == nil {
			t.Errorf("parseComposeArgs(%q) accepted", bad)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for s, want := range map[string][3]int{"v2.40.3": {2, 40, 3}, "2.36.0-desktop.1": {2, 36, 0}, "5.6.0": {5, 6, 0}, "v2.30": {2, 30, 0}} {
		if got, ok := parseVersion(s); !ok || got != want {
			t.Errorf("parseVersion(%q) = %v %v", s, got, ok)
		}
	}
	if _, ok := parseVersion("dev"); ok {
		t.Error("parseVersion(dev) ok")
	}
}

func TestProviderMessages(t *testing.T) {
	var buf bytes.Buffer
	p := providerIO{w: &buf, types: []string{"error", "info", "setenv"}}
	p.send("info", "connecting")
	p.send("rawsetenv", "A=1") // not understood by this compose: never sent, it would abort up
	p.send("setenv", "A=1")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m struct{ Type, Message string }
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, m.Type+":"+m.Message)
	}
	if !slices.Equal(got, []string{"info:connecting", "setenv:A=1"}) {
		t.Errorf("messages = %q", got)
	}
}

func TestProviderMetadata(t *testing.T) {
	var buf bytes.Buffer
	if err := providerMetadata(&buf); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Description string
		Up          struct{ Parameters []struct{ Name string } }
	}
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m.Description == "" || len(m.Up.Parameters) != len(providerParams) {
		t.Errorf("metadata %s: %v", buf.String(), err)
	}
}

// fakeDocker puts a docker on PATH that prints version for `docker compose version --short`, or
// fails when version is "".
func fakeDocker(t *testing.T, version string) {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\nexit 1\n"
	if version != "" {
		script = "#!/bin/sh\n[ \"$1 $2 $3\" = \"compose version --short\" ] && echo " + version + " && exit 0\nexit 1\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
}

func TestComposeVersionCheck(t *testing.T) {
	cases := []struct {
		version string
		want    error
	}{
		{"v2.24.0", errComposeTooOld},
		{"2.29.9", errComposeTooOld},
		{"", errComposeMissing},
		{"2.30.0", nil},
		{"v2.40.3-desktop.1", nil},
		{"5.6.0", nil},
	}
	for _, c := range cases {
		fakeDocker(t, c.version)
		err := checkComposeVersion(context.Background())
		if (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("version %q: err = %v, want %v", c.version, err, c.want)
		}
		if c.want != nil && hint(err) == "" {
			t.Errorf("version %q: no hint for %v", c.version, err)
		}
	}
}
