package envfile

import (
	"bytes"
	"maps"
	"slices"
	"testing"
)

// FuzzLinesParse: what Lines writes, Parse (docker's reading) gives back exactly, except the
// variables Lines says it skipped; nothing is changed on the way (quotes, '=', spaces, '#').
func FuzzLinesParse(f *testing.F) {
	f.Add("DB_HOST", "db.app", "TOKEN", "a=b")
	f.Add("QUOTED", `"x"`, "SPACES", "  lead and trail  ")
	f.Add("#COMMENT", "v", "MULTI", "line1\nline2")
	f.Add("K", "", "WIN", "crlf\r")
	f.Add(" SPACE", "v", "UNI", "ü≠\t#")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		env := map[string]string{k1: v1, k2: v2}
		data, skipped := Lines(env)
		got, err := Parse(bytes.NewReader(data), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("Parse of Lines' output: %v\n%q", err, data)
		}
		want := maps.Clone(env)
		for _, k := range skipped {
			delete(want, k)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("env %q: read back %q (skipped %q)\n%q", env, got, skipped, data)
		}
		for _, k := range skipped {
			if _, ok := env[k]; !ok || slices.Contains(slices.Collect(maps.Keys(got)), k) {
				t.Fatalf("skipped %q is not a left-out variable", k)
			}
		}
	})
}
