package httproute

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"strings"
)

// headerMatcher is one compiled HeaderMatch.
type headerMatcher struct {
	key string // canonical header key
	re  *regexp.Regexp
}

// compile does the work of Filter.Compile.
func compile(f Filter) (*Matcher, error) {
	n := 0
	for _, p := range []string{f.PathEqual, f.PathPrefix, f.PathRegex} {
		if p != "" {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("httproute: at most one of path equal, path prefix and path regex")
	}
	m := &Matcher{pathEqual: f.PathEqual, pathPrefix: f.PathPrefix}
	for _, h := range f.Headers {
		if !isToken(h.Name) {
			return nil, fmt.Errorf("httproute: header name %q is not an HTTP token", h.Name)
		}
		re, err := wholeRegexp(h.Value)
		if err != nil {
			return nil, fmt.Errorf("httproute: header %s: %w", h.Name, err)
		}
		m.headers = append(m.headers, headerMatcher{key: textproto.CanonicalMIMEHeaderKey(h.Name), re: re})
	}
	if f.PathRegex != "" {
		re, err := wholeRegexp(f.PathRegex)
		if err != nil {
			return nil, fmt.Errorf("httproute: path regex: %w", err)
		}
		m.pathRegex = re
	}
	return m, nil
}

// wholeRegexp compiles expr so that it must match a whole value, not a part of it.
func wholeRegexp(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", expr, err)
	}
	return re, nil
}

func (m *Matcher) match(path string, h http.Header) bool {
	if m == nil {
		return true // no filter: every request
	}
	switch {
	case m.pathEqual != "" && path != m.pathEqual:
		return false
	case m.pathPrefix != "" && !strings.HasPrefix(path, m.pathPrefix):
		return false
	case m.pathRegex != nil && !m.pathRegex.MatchString(path):
		return false
	}
	for _, hm := range m.headers {
		if !allMatch(hm.re, headerValues(h, hm.key)) {
			return false
		}
	}
	return true
}

// headerValues finds key in h even when h was built by hand with keys that are not canonical.
func headerValues(h http.Header, key string) []string {
	if v, ok := h[key]; ok {
		return v
	}
	var vs []string
	for k, v := range h {
		if strings.EqualFold(k, key) {
			vs = append(vs, v...)
		}
	}
	return vs
}

// allMatch: a request that lacks the header does not match, even a pattern that accepts the
// empty string; a header sent several times matches only when every value does, so that two
// filters with different literal values (which Overlaps calls disjoint) never both match one
// request that carries both.
func allMatch(re *regexp.Regexp, vs []string) bool {
	for _, v := range vs {
		if !re.MatchString(v) {
			return false
		}
	}
	return len(vs) > 0
}

// overlaps does the work of Filter.Overlaps.
func overlaps(f, g Filter) bool {
	for _, a := range f.Headers {
		for _, b := range g.Headers {
			if strings.EqualFold(a.Name, b.Name) && isLiteral(a.Value) && isLiteral(b.Value) && a.Value != b.Value {
				return false
			}
		}
	}
	return !pathsDisjoint(f, g) && !pathsDisjoint(g, f)
}

// pathsDisjoint reports whether no path can satisfy both f's and g's literal path matchers. A
// regular expression is never provably disjoint here: Overlaps stays conservative.
func pathsDisjoint(f, g Filter) bool {
	switch {
	case f.PathEqual != "" && g.PathEqual != "":
		return f.PathEqual != g.PathEqual
	case f.PathPrefix != "" && g.PathPrefix != "":
		return !strings.HasPrefix(f.PathPrefix, g.PathPrefix) && !strings.HasPrefix(g.PathPrefix, f.PathPrefix)
	case f.PathEqual != "" && g.PathPrefix != "":
		return !strings.HasPrefix(f.PathEqual, g.PathPrefix)
	}
	return false
}

// isLiteral reports whether a header value pattern matches exactly itself.
func isLiteral(v string) bool { return regexp.QuoteMeta(v) == v }

// filterString does the work of Filter.String.
func filterString(f Filter) string {
	var parts []string
	for _, h := range f.Headers {
		parts = append(parts, "header "+h.Name+"="+h.Value)
	}
	switch {
	case f.PathEqual != "":
		parts = append(parts, "path equal "+f.PathEqual)
	case f.PathPrefix != "":
		parts = append(parts, "path prefix "+f.PathPrefix)
	case f.PathRegex != "":
		parts = append(parts, "path regex "+f.PathRegex)
	}
	if len(parts) == 0 {
		return "all requests"
	}
	return strings.Join(parts, ", ")
}

// isToken reports whether s is a non-empty RFC 9110 token, as header names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
