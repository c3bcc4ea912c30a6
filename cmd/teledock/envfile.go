package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// envFileLines renders env as KEY=VALUE lines that `docker run --env-file` reads. Docker takes each
// line literally (no quotes, no escapes), drops lines starting with '#', refuses names with
// whitespace, and splits at newlines (dropping a trailing \r), so variables it cannot read back
// exactly are left out and returned in skipped (the JSON file has them all).
func envFileLines(env map[string]string) (data []byte, skipped []string) {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		if k == "" || strings.HasPrefix(k, "#") || strings.ContainsAny(k, "= \t\r\n\v\f\x00") || strings.ContainsAny(v, "\r\n\x00") {
			skipped = append(skipped, k)
			continue
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes(), skipped
}

// writeEnvFile writes env for `docker run --env-file` (see envFileLines). The file may hold
// secrets, so only the user can read it.
func writeEnvFile(path string, env map[string]string) (skipped []string, err error) {
	data, skipped := envFileLines(env)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write env file: %w", err)
	}
	// WriteFile keeps the mode of a file that exists; a secret must not stay world-readable.
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("write env file: %w", err)
	}
	return skipped, nil
}

// writeEnvJSON writes env as one JSON object, readable only by the user.
func writeEnvJSON(path string, env map[string]string) error {
	if env == nil {
		env = map[string]string{}
	}
	data, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return fmt.Errorf("write env json: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write env json: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("write env json: %w", err)
	}
	return nil
}

// tempEnvFile writes env to a new private temporary file for a handler container and returns its
// path; the caller removes it.
func tempEnvFile(env map[string]string) (path string, skipped []string, err error) {
	f, err := os.CreateTemp("", "teledock-env-*.env")
	if err != nil {
		return "", nil, fmt.Errorf("env file for the handler: %w", err)
	}
	data, skipped := envFileLines(env)
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return "", nil, fmt.Errorf("env file for the handler: %w", err)
	}
	return f.Name(), skipped, nil
}
