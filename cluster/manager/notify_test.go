package manager

import (
	"context"
	"errors"
	"testing"
	"time"

	"teledock.dev/teledock/cluster/inject"
)

// configsByName is a ConfigSource of fixed configs, keyed by workload name.
type configsByName map[string]inject.AgentConfig

func (c configsByName) AgentConfig(_ context.Context, _, workload string) (inject.AgentConfig, error) {
	cfg, ok := c[workload]
	if !ok {
		return inject.AgentConfig{}, inject.ErrNoConfig
	}
	return cfg, nil
}

// The webhook sees only this manager's configs; another install's count as none, and every
// lookup is noted for the diagnosis either way.
func TestRecordingSourceOnlyOwnConfigs(t *testing.T) {
	var own, other inject.AgentConfig
	own.ManagerAddress = "traffic-manager.teledock:8081"
	other.ManagerAddress = "traffic-manager.team-b:8081"
	src := newRecordingSource(configsByName{"mine": own, "theirs": other}, nil, own.ManagerAddress)
	start := time.Now()
	ctx := context.Background()
	if cfg, err := src.AgentConfig(ctx, "shop", "mine"); err != nil || cfg.ManagerAddress != own.ManagerAddress {
		t.Errorf("own config: %v, %v", cfg.ManagerAddress, err)
	}
	if _, err := src.AgentConfig(ctx, "shop", "theirs"); !errors.Is(err, inject.ErrNoConfig) {
		t.Errorf("another manager's config: %v, want ErrNoConfig", err)
	}
	if !src.askedSince("shop", "theirs", start) {
		t.Error("the lookup of another manager's config was not noted")
	}
}
