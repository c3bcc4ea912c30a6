package envfile

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// FuzzLinesParse: what Lines writes, Parse (docker's reading) gives back exactly, except the
// variables Lines says it skipped; nothing is changed on the way (quotes, '=', spaces, '#',
// unicode, long lines).
func FuzzLinesParse(f *testing.F) {
	f.Add("DB_HOST", "db.app", "TOKEN", "a=b")
	f.Add("QUOTED", `"x"`, "SPACES", "  lead and trail  ")
	f.Add("#COMMENT", "v", "MULTI", "line1\nline2")
	f.Add("K", "", "WIN", "crlf\r")
	f.Add(" SPACE", "v", "UNI", "ü≠\t#")
	f.Add("\u00a0NBSP", "v", "\ufeffBOM", "v")
	f.Add("LATIN1", "caf\xe9", "K\xff", "v")
	f.Add("LONG", strings.Repeat("x", maxLine-len("LONG=")), "LONGER", strings.Repeat("y", maxLine))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		env := map[string]string{k1: v1, k2: v2}
		data, skipped := Lines(env)
		got, err := Parse(bytes.NewReader(data), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("Parse of Lines' output: %v\n%s", err, short(data))
		}
		want := maps.Clone(env)
		for _, k := range skipped {
			delete(want, k)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("names %q: read back %q (skipped %q)\n%s", slices.Sorted(maps.Keys(env)), slices.Sorted(maps.Keys(got)), skipped, short(data))
		}
		for _, k := range skipped {
			if _, ok := env[k]; !ok || slices.Contains(slices.Collect(maps.Keys(got)), k) {
				t.Fatalf("skipped %q is not a left-out variable", k)
			}
		}
	})
}

// short quotes b, cut to a readable length.
func short(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}
