// Package compose turns a compose project whose services carry x-teledock (or Telepresence's
// x-tele) into a plan and a sparse override file that plain `docker compose` runs: marked services
// join the network namespace of a teledock daemon that is itself a service of the project.
package compose

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// LoadOptions are docker compose's global flags that decide which project is loaded.
type LoadOptions struct {
	ConfigPaths []string // -f/--file; empty: COMPOSE_FILE, else compose.yaml (+ compose.override.yaml)
	ProjectName string   // -p/--project-name
	ProjectDir  string   // --project-directory
	Profiles    []string // --profile
	EnvFiles    []string // --env-file
	// Env is the environment to interpolate with; nil means the process's.
	Env []string
}

// Load loads the project with compose-go the way docker compose does: the same file discovery,
// COMPOSE_FILE, automatic compose.override.yaml, .env, profiles, project name, include and
// extends. The services' environments are left unresolved, so env_file entries stay as written.
func Load(ctx context.Context, o LoadOptions) (*types.Project, error) {
	env := o.Env
	if env == nil {
		env = os.Environ()
	}
	fns := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(o.ProjectDir),
		cli.WithEnv(env),
	}
	if _, ok := lookup(env, "PWD"); !ok {
		if pwd, err := os.Getwd(); err == nil {
			fns = append(fns, cli.WithEnv([]string{"PWD=" + pwd}))
		}
	}
	// The order is docker compose's: .env can set COMPOSE_FILE, and a project directory found
	// through the files can hold another .env.
	fns = append(fns,
		cli.WithEnvFiles(o.EnvFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithEnvFiles(o.EnvFiles...),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(o.Profiles...),
		cli.WithName(o.ProjectName),
		cli.WithoutEnvironmentResolution,
		cli.WithResolvedPaths(true),
	)
	opts, err := cli.NewProjectOptions(o.ConfigPaths, fns...)
	if err != nil {
		return nil, fmt.Errorf("compose project: %w", err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("compose project: %w", err)
	}
	return p, nil
}

func lookup(env []string, key string) (string, bool) {
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return kv[len(key)+1:], true
		}
	}
	return "", false
}
