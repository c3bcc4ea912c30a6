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
	"unicode"
	"unicode/utf8"
)

// Lines renders env as KEY=VALUE lines. Docker takes each line literally (no quotes, no escapes):
// it refuses a file that is not UTF-8 or has a line over bufio.MaxScanTokenSize, drops a BOM
// starting the file and whitespace starting a line, skips lines starting with '#', refuses names
// with spaces or tabs, and splits at newlines (dropping a trailing \r). Variables it cannot read
// back exactly are left out and returned in skipped.
func Lines(env map[string]string) (data []byte, skipped []string) {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		if !representable(k, v) {
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

// maxLine is the longest line docker reads: its scanner's buffer holds the line and its newline.
const maxLine = bufio.MaxScanTokenSize - 1

// representable reports whether the line k=v reads back as exactly k and v (see Lines). A
// process environment cannot hold NUL either.
func representable(k, v string) bool {
	switch {
	case k == "" || strings.HasPrefix(k, "#") || strings.HasPrefix(k, bom):
		return false
	case strings.ContainsAny(k, "= \t\r\n\v\f\x00") || strings.TrimLeftFunc(k, unicode.IsSpace) != k:
		return false
	case strings.ContainsAny(v, "\r\n\x00"):
		return false
	case !utf8.ValidString(k) || !utf8.ValidString(v):
		return false
	}
	return len(k)+1+len(v) <= maxLine
}

// bom is the UTF-8 byte order mark, which docker drops from the start of a file.
const bom = "\uFEFF"

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

// Parse reads lines as docker does: the file must be UTF-8 with lines of at most
// bufio.MaxScanTokenSize, a BOM starting it is dropped, blank lines and '#' comments are skipped,
// leading whitespace is dropped, and a name without '=' takes its value from lookup (and is left
// out when lookup has none).
func Parse(r io.Reader, lookup func(string) (string, bool)) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(r) // docker's buffer: the default, bufio.MaxScanTokenSize
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("line %d: not UTF-8", n)
		}
		if n == 1 {
			line = strings.TrimPrefix(line, bom)
		}
		line = strings.TrimLeftFunc(line, unicode.IsSpace)
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
