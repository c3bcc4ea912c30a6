package inject

import (
	"strings"
	"testing"
)

// assertErrContains fails unless err is non-nil and its message contains want.
func assertErrContains(tb testing.TB, err error, want string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		tb.Fatalf("error\n  %v\ndoes not contain\n  %s", err, want)
	}
}
