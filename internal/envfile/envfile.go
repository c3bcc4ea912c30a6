// Package envfile writes and reads environment files in the format of `docker run --env-file`,
// which is also compose's `env_file: {format: raw}`: one KEY=VALUE a line, taken literally.
package envfile

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// Lines renders env as KEY=VALUE lines. Docker takes each line literally (no quotes, no escapes),
// drops lines starting with '#', refuses names with whitespace, and splits at newlines (dropping a
// trailing \r), so variables it cannot read back exactly are left out and returned in skipped.
func Lines(env map[string]string) (data []byte, skipped []string) {
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

// Write writes env to path (see Lines). The file may hold secrets, so only the user can read it.
func Write(path string, env map[string]string) (skipped []string, err error) {
	data, skipped := Lines(env)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write env file: %w", err)
	}
	// WriteFile keeps the mode of a file that exists; a secret must not stay world-readable.
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("write env file: %w", err)
	}
	return skipped, nil
}

// Parse reads lines as docker does: blank lines and '#' comments are skipped, leading whitespace
// is dropped, and a name without '=' takes its value from lookup (and is left out when lookup has
// none).
func Parse(r io.Reader, lookup func(string) (string, bool)) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeft(strings.TrimSuffix(sc.Text(), "\r"), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, hasValue := strings.Cut(line, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("line %d: invalid variable name %q", n, k)
		}
		if !hasValue {
			if lookup == nil {
				continue
			}
			if v, ok := lookup(k); ok {
				env[k] = v
			}
			continue
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	return env, nil
}
