package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"unicode/utf8"

	"teledock.dev/teledock/internal/envfile"
)

// envFileLines renders env for `docker run --env-file`; see envfile.Lines.
func envFileLines(env map[string]string) (data []byte, skipped []string) { return envfile.Lines(env) }

// writeEnvFile writes env for `docker run --env-file`, readable by the user only.
func writeEnvFile(path string, env map[string]string) (skipped []string, err error) {
	return envfile.Write(path, env)
}

// writeEnvJSON writes env as one JSON object, readable only by the user. JSON strings hold UTF-8
// only (encoding/json would write U+FFFD for the rest, a wrong value), so variables whose name or
// value is not UTF-8 are left out and returned in skipped.
func writeEnvJSON(path string, env map[string]string) (skipped []string, err error) {
	env, skipped = jsonEnv(env)
	data, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("write env json: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write env json: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("write env json: %w", err)
	}
	return skipped, nil
}

// jsonEnv is env without the variables JSON cannot hold, and their names, sorted.
func jsonEnv(env map[string]string) (map[string]string, []string) {
	out := make(map[string]string, len(env))
	var skipped []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !utf8.ValidString(k) || !utf8.ValidString(env[k]) {
			skipped = append(skipped, k)
			continue
		}
		out[k] = env[k]
	}
	return out, skipped
}

// handlerEnvFile is tempEnvFile for a container teledock starts: what the format cannot hold is
// left out with a warning.
func handlerEnvFile(d deps, env map[string]string) (string, error) {
	path, skipped, err := tempEnvFile(env)
	if len(skipped) > 0 {
		d.log.Warn("environment variables docker --env-file cannot hold were left out", "names", skipped)
	}
	return path, err
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
