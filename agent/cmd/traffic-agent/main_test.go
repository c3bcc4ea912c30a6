package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/redirect"
	"teledock.dev/teledock/internal/version"
)

func testEnv(t *testing.T, vars map[string]string, installed *[]redirect.Redirect) environment {
	return environment{
		getenv:   func(k string) string { return vars[k] },
		readFile: func(p string) ([]byte, error) { return nil, errors.New("no files here") },
		installRedirects: func(r []redirect.Redirect) error {
			*installed = r
			return nil
		},
	}
}

func redirectConfig(t *testing.T) string {
	t.Helper()
	js, err := agentconfig.Config{
		Version: agentconfig.SchemaVersion, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart",
		AgentImage: "img", ManagerAddress: "tm:8081",
		Targets: []agentconfig.Target{{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPort: 8080,
			AgentPort: 9900, Mode: agentconfig.ModeRedirect}},
	}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

func TestRun(t *testing.T) {
	cfg := redirectConfig(t)
	for _, tc := range []struct {
		name          string
		args          []string
		vars          map[string]string
		wantCode      int
		wantStdout    string
		wantStderr    string
		wantInstalled []redirect.Redirect
	}{
		{name: "no command", wantCode: 2, wantStderr: "usage: traffic-agent"},
		{name: "unknown command", args: []string{"fly"}, wantCode: 2, wantStderr: "usage: traffic-agent"},
		{name: "version", args: []string{"version"}, wantStdout: version.Version + "\n"},
		{name: "redirect", args: []string{"redirect"}, vars: map[string]string{agentconfig.EnvConfig: cfg},
			wantInstalled: []redirect.Redirect{{Protocol: "tcp", AppPort: 8080, AgentPort: 9900}}},
		{name: "redirect from another variable", args: []string{"redirect", "--config", "env:OTHER"},
			vars:          map[string]string{"OTHER": cfg, "TELEDOCK_LOG_LEVEL": "debug"},
			wantInstalled: []redirect.Redirect{{Protocol: "tcp", AppPort: 8080, AgentPort: 9900}}},
		{name: "redirect without config", args: []string{"redirect"}, wantCode: 1,
			wantStderr: "no agent config: environment variable TELEDOCK_AGENT_CONFIG is empty"},
		{name: "run with a missing file", args: []string{"run", "--config", "/etc/nope"}, wantCode: 1,
			wantStderr: "read agent config: no files here"},
		{name: "bad flag", args: []string{"run", "--nope"}, wantCode: 2, wantStderr: "flag provided but not defined: -nope"},
		{name: "extra argument", args: []string{"redirect", "now"}, wantCode: 2, wantStderr: "usage: traffic-agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var installed []redirect.Redirect
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, testEnv(t, tc.vars, &installed), &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if stdout.String() != tc.wantStdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.wantStderr)
			}
			if !reflect.DeepEqual(installed, tc.wantInstalled) {
				t.Errorf("installed %v, want %v", installed, tc.wantInstalled)
			}
		})
	}
}

func TestSleepEndsOnCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if code := run(ctx, []string{"sleep"}, testEnv(t, nil, new([]redirect.Redirect)), &out, &out); code != 0 {
		t.Errorf("exit code %d: %s", code, out.String())
	}
}

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"": slog.LevelInfo, "debug": slog.LevelDebug, " WARN ": slog.LevelWarn, "nonsense": slog.LevelInfo} {
		if got := logLevel(in); got != want {
			t.Errorf("logLevel(%q) = %v, want %v", in, got, want)
		}
	}
}
