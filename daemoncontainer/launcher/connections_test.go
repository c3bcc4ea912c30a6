package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestStore(t *testing.T) {
	cfgDir := t.TempDir()
	s := NewStore(cfgDir)
	want := Connection{Name: "default", Container: "teledock-daemon-default", Token: NewToken(), APIPort: 40000}
	if len(want.Token) != 64 {
		t.Fatalf("token %q is not 32 hex-encoded bytes", want.Token)
	}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(cfgDir, "teledock", "connections", "default.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := s.Load("default")
	if err != nil || got != want {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	for range 2 { // Remove is idempotent
		if err := s.Remove("default"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Load("default"); !errors.Is(err, ErrNoConnectionFile) {
		t.Errorf("Load after Remove: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"dev-2.team_a", true},
		{"", false},
		{"../etc", false},
		{"a/b", false},
		{"-x", false},
		{"has space", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok {
				t.Errorf("ValidateName(%q) = %v", tt.name, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Errorf("error does not wrap ErrInvalidName: %v", err)
			}
		})
	}
}
