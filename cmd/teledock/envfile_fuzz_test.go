package main

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"teledock.dev/teledock/internal/envfile"
)

// FuzzWriteEnvFiles: what `intercept -e` and `-j` write, the reader of each format (docker's
// env-file rules, encoding/json) gives back exactly, but for the variables the writer said it
// left out; both files are the user's only.
func FuzzWriteEnvFiles(f *testing.F) {
	f.Add("DB_URL", "postgres://u:p@db/x?a=b", "QUOTED", `"x" 'y'`)
	f.Add("MULTI", "line1\nline2", "HASH", "#not a comment")
	f.Add("SPACES", "  both  ", "UNI", "ü≠\u2028")
	f.Add("LATIN1", "caf\xe9", "K\xff", "v")
	f.Add("", "empty name", "A=B", "v")
	f.Add("ESC", "\\n\\t\x1b[0m", "CTRL", "\x7f\x01")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		env := map[string]string{k1: v1, k2: v2}
		dir := t.TempDir()

		envPath := filepath.Join(dir, "pod.env")
		skipped, err := writeEnvFile(envPath, env)
		if err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(envPath)
		if err != nil {
			t.Fatal(err)
		}
		got, err := envfile.Parse(fh, nil)
		fh.Close()
		if err != nil {
			t.Fatalf("env file does not read back: %v", err)
		}
		checkRoundTrip(t, "env file", env, got, skipped)

		jsonPath := filepath.Join(dir, "pod.json")
		skipped, err = writeEnvJSON(jsonPath, env)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(jsonPath)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("env JSON does not read back: %v", err)
		}
		checkRoundTrip(t, "env JSON", env, got, skipped)

		for _, p := range []string{envPath, jsonPath} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v (%v), want 0600", filepath.Base(p), fi.Mode().Perm(), err)
			}
		}
	})
}

// checkRoundTrip: got is env without the skipped variables, and only variables of env were skipped.
func checkRoundTrip(t *testing.T, what string, env, got map[string]string, skipped []string) {
	t.Helper()
	want := maps.Clone(env)
	for _, k := range skipped {
		if _, ok := env[k]; !ok {
			t.Fatalf("%s: skipped %q, which is not in the environment", what, k)
		}
		delete(want, k)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("%s: names %q read back as %q (skipped %q)", what, slices.Sorted(maps.Keys(env)), slices.Sorted(maps.Keys(got)), skipped)
	}
}
