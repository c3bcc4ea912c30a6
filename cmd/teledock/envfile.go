package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"teledock.dev/teledock/internal/envfile"
)

// envFileLines renders env for `docker run --env-file`; see envfile.Lines.
func envFileLines(env map[string]string) (data []byte, skipped []string) { return envfile.Lines(env) }

// writeEnvFile writes env for `docker run --env-file`, readable by the user only.
func writeEnvFile(path string, env map[string]string) (skipped []string, err error) {
	return envfile.Write(path, env)
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
