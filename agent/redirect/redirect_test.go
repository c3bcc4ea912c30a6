package redirect

import (
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rules   []Redirect
		wantErr string
	}{
		{"none", nil, ""},
		{"tcp and udp on one port", []Redirect{{"tcp", 53, 9900}, {"udp", 53, 9901}}, ""},
		{"repeated", []Redirect{{"tcp", 80, 9900}, {"tcp", 80, 9900}}, ""},
		{"sctp", []Redirect{{"sctp", 80, 9900}}, `invalid redirect: protocol "sctp", want tcp or udp`},
		{"zero port", []Redirect{{"tcp", 0, 9900}}, "invalid redirect: tcp dport 0 redirect to :9900"},
		{"to itself", []Redirect{{"tcp", 80, 80}}, "invalid redirect: tcp dport 80 redirect to :80"},
		{"two destinations", []Redirect{{"tcp", 80, 9900}, {"tcp", 80, 9901}}, "invalid redirect: tcp dport 80 goes to both :9900 and :9901"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.rules)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v is not ErrInvalid", err)
			}
		})
	}
}
