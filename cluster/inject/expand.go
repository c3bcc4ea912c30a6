package inject

import "strings"

// expand replaces the $(NAME) references in s the way the kubelet expands a container's env
// values and command: "$$" is a literal "$", a reference to a name that lookup does not know is
// kept as written, and so are an unterminated "$(" and a "$" before any other character.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end // at the ')'
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
