package launcher

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNoConnectionFile: no token file for that connection name.
var ErrNoConnectionFile = errors.New("no connection file")

// Connection is what the CLI keeps about a connection between commands: the token that opens the
// daemon's API and where that API is.
type Connection struct {
	Name      string `json:"name"`
	Container string `json:"container"`
	Token     string `json:"token"`
	APIPort   int    `json:"api_port"`
}

// NewToken returns 32 random bytes, hex-encoded.
func NewToken() string {
	b := make([]byte, 32)
	// crypto/rand.Read never fails; it crashes the program when the system has no randomness.
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Store keeps connection files, one per connection, readable by the user only.
type Store struct{ dir string }

// NewStore keeps files under configDir/teledock/connections. configDir is normally
// os.UserConfigDir(): $XDG_CONFIG_HOME, else ~/.config.
func NewStore(configDir string) Store {
	if configDir == "" {
		return Store{}
	}
	return Store{dir: filepath.Join(configDir, "teledock", "connections")}
}

func (s Store) path(name string) (string, error) {
	if s.dir == "" {
		return "", errors.New("no configuration directory: set XDG_CONFIG_HOME or HOME")
	}
	if err := ValidateName(name); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, name+".json"), nil
}

// Save writes a connection file atomically (a reader never sees half a token).
func (s Store) Save(c Connection) error {
	p, err := s.path(c.Name)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode connection %s: %w", c.Name, err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save connection %s: %w", c.Name, err)
	}
	tmp, err := os.CreateTemp(s.dir, "."+c.Name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("save connection %s: %w", c.Name, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	// CreateTemp makes the file 0600 already; the token must never be readable by others.
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("save connection %s: %w", c.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save connection %s: %w", c.Name, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("save connection %s: %w", c.Name, err)
	}
	return nil
}

// Load reads a connection file; a missing file is an error wrapping ErrNoConnectionFile.
func (s Store) Load(name string) (Connection, error) {
	p, err := s.path(name)
	if err != nil {
		return Connection{}, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Connection{}, fmt.Errorf("%w: %s", ErrNoConnectionFile, name)
	}
	if err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %w", name, err)
	}
	var c Connection
	if err := json.Unmarshal(data, &c); err != nil {
		return Connection{}, fmt.Errorf("load connection %s: %s: %w", name, p, err)
	}
	return c, nil
}

// Remove deletes a connection file; a missing file is not an error.
func (s Store) Remove(name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove connection %s: %w", name, err)
	}
	return nil
}
