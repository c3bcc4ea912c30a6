package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	dockerregistry "github.com/docker/docker/api/types/registry"
)

// Credentials finds the user's credentials for registry host as `docker push` would: the Docker
// config file ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), its credHelpers entry for
// the host, then its credsStore, then its auths. No credentials is not an error: many local
// registries need none. The result is the engine's X-Registry-Auth value ("" for none).
func Credentials(host string) (string, error) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", nil
		}
		dir = filepath.Join(home, ".docker")
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("docker config: %w", err)
	}
	return credentialsFrom(data, host, runHelper)
}

type dockerConfig struct {
	Auths       map[string]struct{ Auth, IdentityToken string } `json:"auths"`
	CredsStore  string                                          `json:"credsStore"`
	CredHelpers map[string]string                               `json:"credHelpers"`
}

// helperFunc asks credential helper name for host's credentials; found is false when it has none.
type helperFunc func(name, host string) (user, secret string, found bool, err error)

func credentialsFrom(data []byte, host string, helper helperFunc) (string, error) {
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("docker config: %w", err)
	}
	ac := dockerregistry.AuthConfig{ServerAddress: host}
	name := cfg.CredHelpers[host]
	if name == "" {
		name = cfg.CredsStore
	}
	if name != "" {
		user, secret, found, err := helper(name, host)
		if err != nil {
			return "", fmt.Errorf("credential helper docker-credential-%s: %w", name, err)
		}
		if found {
			if user == "<token>" {
				ac.IdentityToken = secret
			} else {
				ac.Username, ac.Password = user, secret
			}
			return dockerregistry.EncodeAuthConfig(ac)
		}
	}
	for key, a := range cfg.Auths {
		if normalizeHost(key) != host {
			continue
		}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return "", fmt.Errorf("docker config: auths[%s]: %w", key, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return "", fmt.Errorf("docker config: auths[%s] is not user:password", key)
			}
			ac.Username, ac.Password = user, pass
		}
		ac.IdentityToken = a.IdentityToken
		return dockerregistry.EncodeAuthConfig(ac)
	}
	return "", nil
}

// normalizeHost turns an auths key ("https://registry.example.com/v1/") into a host.
func normalizeHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, _, _ := strings.Cut(key, "/")
	return host
}

// runHelper runs docker-credential-NAME get, as the Docker CLI does.
func runHelper(name, host string) (string, string, bool, error) {
	cmd := exec.Command("docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(host)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// The helpers' protocol: "credentials not found in native keychain" on stdout.
		if strings.Contains(string(out), "credentials not found") {
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()+string(out)))
	}
	var r struct{ Username, Secret string }
	if err := json.Unmarshal(out, &r); err != nil {
		return "", "", false, fmt.Errorf("its answer: %w", err)
	}
	return r.Username, r.Secret, true, nil
}
