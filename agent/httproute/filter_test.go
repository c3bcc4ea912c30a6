package httproute

import (
	"net/http"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		f    Filter
		ok   bool
	}{
		{"zero", Filter{}, true},
		{"header", Filter{Headers: []HeaderMatch{{Name: "X-Dev", Value: "alice"}}}, true},
		{"header regexp", Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: "ali(ce|x)"}}}, true},
		{"two paths", Filter{PathEqual: "/a", PathPrefix: "/b"}, false},
		{"three paths", Filter{PathEqual: "/a", PathPrefix: "/b", PathRegex: "/c"}, false},
		{"prefix and regex", Filter{PathPrefix: "/b", PathRegex: "/c"}, false},
		{"bad path regex", Filter{PathRegex: "/a("}, false},
		{"bad header regex", Filter{Headers: []HeaderMatch{{Name: "x", Value: "[a"}}}, false},
		{"empty header name", Filter{Headers: []HeaderMatch{{Name: "", Value: "a"}}}, false},
		{"header name with space", Filter{Headers: []HeaderMatch{{Name: "x dev", Value: "a"}}}, false},
		{"header name with colon", Filter{Headers: []HeaderMatch{{Name: "x:dev", Value: "a"}}}, false},
		{"header name with token punctuation", Filter{Headers: []HeaderMatch{{Name: "x-dev_1.!~", Value: "a"}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.f.Compile()
			if tt.ok && (err != nil || m == nil) {
				t.Fatalf("Compile() = %v, %v; want a matcher", m, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("Compile() succeeded; want an error")
			}
		})
	}
}

func TestMatch(t *testing.T) {
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	alice := []HeaderMatch{{Name: "x-dev", Value: "alice"}}
	tests := []struct {
		name string
		f    Filter
		path string
		h    http.Header
		want bool
	}{
		{"zero matches all", Filter{}, "/anything", hdr(), true},
		{"header equal", Filter{Headers: alice}, "/", hdr("X-Dev", "alice"), true},
		{"header name case-insensitive", Filter{Headers: []HeaderMatch{{Name: "X-DEV", Value: "alice"}}}, "/", hdr("x-dev", "alice"), true},
		{"hand-built header map", Filter{Headers: alice}, "/", http.Header{"x-DEV": {"alice"}}, true},
		{"header value whole, not part", Filter{Headers: alice}, "/", hdr("X-Dev", "alice2"), false},
		{"header value whole, not suffix", Filter{Headers: alice}, "/", hdr("X-Dev", "malice"), false},
		{"header value case-sensitive", Filter{Headers: alice}, "/", hdr("X-Dev", "Alice"), false},
		{"header absent", Filter{Headers: alice}, "/", hdr("X-Other", "alice"), false},
		{"absent header against empty-accepting regexp", Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: ".*"}}}, "/", hdr(), false},
		// Else one request with alice and bob would match both, whose filters Overlaps calls disjoint.
		{"several values, one matches", Filter{Headers: alice}, "/", hdr("X-Dev", "bob", "X-Dev", "alice"), false},
		{"several values, all match", Filter{Headers: alice}, "/", hdr("X-Dev", "alice", "X-Dev", "alice"), true},
		{"several values, none matches", Filter{Headers: alice}, "/", hdr("X-Dev", "bob", "X-Dev", "carol"), false},
		{"header regexp alternation anchored", Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: "a|b"}}}, "/", hdr("X-Dev", "ab"), false},
		{"header regexp alternation", Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: "a|b"}}}, "/", hdr("X-Dev", "b"), true},
		{"all headers must hold", Filter{Headers: []HeaderMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}}, "/", hdr("A", "1"), false},
		{"all headers hold", Filter{Headers: []HeaderMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}}, "/", hdr("A", "1", "B", "2"), true},
		{"path equal", Filter{PathEqual: "/api"}, "/api", hdr(), true},
		{"path equal, longer", Filter{PathEqual: "/api"}, "/api/x", hdr(), false},
		{"path prefix", Filter{PathPrefix: "/api"}, "/api/x", hdr(), true},
		{"path prefix, other", Filter{PathPrefix: "/api"}, "/web/api", hdr(), false},
		{"path regex whole", Filter{PathRegex: "/v[0-9]+"}, "/v12", hdr(), true},
		{"path regex not part", Filter{PathRegex: "/v[0-9]+"}, "/v12/x", hdr(), false},
		{"path regex alternation anchored", Filter{PathRegex: "/a|/b"}, "/a/b", hdr(), false},
		{"path and header", Filter{Headers: alice, PathPrefix: "/api"}, "/api/1", hdr("X-Dev", "alice"), true},
		{"path and header, path fails", Filter{Headers: alice, PathPrefix: "/api"}, "/web", hdr("X-Dev", "alice"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.f.Compile()
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(tt.path, tt.h); got != tt.want {
				t.Errorf("Match(%q, %v) = %v; want %v", tt.path, tt.h, got, tt.want)
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	h := func(name, value string) []HeaderMatch { return []HeaderMatch{{Name: name, Value: value}} }
	tests := []struct {
		name string
		f, g Filter
		want bool
	}{
		{"zero and zero", Filter{}, Filter{}, true},
		{"zero and header", Filter{}, Filter{Headers: h("x-dev", "a")}, true},
		{"same literal", Filter{Headers: h("x-dev", "a")}, Filter{Headers: h("x-dev", "a")}, true},
		{"different literals", Filter{Headers: h("x-dev", "alice")}, Filter{Headers: h("x-dev", "bob")}, false},
		{"different literals, names differ in case", Filter{Headers: h("X-Dev", "alice")}, Filter{Headers: h("x-dev", "bob")}, false},
		{"different header names", Filter{Headers: h("x-a", "alice")}, Filter{Headers: h("x-b", "bob")}, true},
		{"literal and regexp", Filter{Headers: h("x-dev", "alice")}, Filter{Headers: h("x-dev", "b.*")}, true},
		{"two regexps", Filter{Headers: h("x-dev", "a.*")}, Filter{Headers: h("x-dev", "b.*")}, true},
		{"different equal paths", Filter{PathEqual: "/a"}, Filter{PathEqual: "/b"}, false},
		{"same equal paths", Filter{PathEqual: "/a"}, Filter{PathEqual: "/a"}, true},
		{"nested prefixes", Filter{PathPrefix: "/api"}, Filter{PathPrefix: "/api/v1"}, true},
		{"nested prefixes, reversed", Filter{PathPrefix: "/api/v1"}, Filter{PathPrefix: "/api"}, true},
		{"disjoint prefixes", Filter{PathPrefix: "/api"}, Filter{PathPrefix: "/web"}, false},
		{"equal inside prefix", Filter{PathEqual: "/api/x"}, Filter{PathPrefix: "/api"}, true},
		{"equal outside prefix", Filter{PathEqual: "/web"}, Filter{PathPrefix: "/api"}, false},
		{"prefix and equal outside", Filter{PathPrefix: "/api"}, Filter{PathEqual: "/web"}, false},
		{"regex and equal", Filter{PathRegex: "/x.*"}, Filter{PathEqual: "/web"}, true},
		{"regex and prefix", Filter{PathRegex: "/x.*"}, Filter{PathPrefix: "/web"}, true},
		{"path and no path", Filter{PathEqual: "/a"}, Filter{}, true},
		{"same header, disjoint paths", Filter{Headers: h("x", "1"), PathEqual: "/a"}, Filter{Headers: h("x", "1"), PathEqual: "/b"}, false},
		{"disjoint headers, same path", Filter{Headers: h("x", "1"), PathPrefix: "/a"}, Filter{Headers: h("x", "2"), PathPrefix: "/a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Overlaps(tt.g); got != tt.want {
				t.Errorf("%v Overlaps %v = %v; want %v", tt.f, tt.g, got, tt.want)
			}
			if got := tt.g.Overlaps(tt.f); got != tt.want {
				t.Errorf("symmetric: %v Overlaps %v = %v; want %v", tt.g, tt.f, got, tt.want)
			}
		})
	}
}

func TestFilterString(t *testing.T) {
	tests := []struct {
		f    Filter
		want string
	}{
		{Filter{}, "all requests"},
		{Filter{Headers: []HeaderMatch{{Name: "x-dev", Value: "alice"}}, PathPrefix: "/api"}, "header x-dev=alice, path prefix /api"},
		{Filter{Headers: []HeaderMatch{{Name: "a", Value: "1"}, {Name: "B", Value: "x.*"}}}, "header a=1, header B=x.*"},
		{Filter{PathEqual: "/health"}, "path equal /health"},
		{Filter{PathRegex: "/v[0-9]+/.*"}, "path regex /v[0-9]+/.*"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("String() = %q; want %q", got, tt.want)
		}
	}
}
