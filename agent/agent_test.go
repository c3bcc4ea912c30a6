package agent

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"reflect"
	"testing"
	"time"

	"teledock.dev/teledock/agent/agentconfig"
	"teledock.dev/teledock/agent/forward"
	"teledock.dev/teledock/agent/redirect"
)

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, nil))
}

func testConfig() agentconfig.Config {
	return agentconfig.Config{
		Version: agentconfig.SchemaVersion, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart",
		AgentImage: "teledock/agent:test", ManagerAddress: "traffic-manager.teledock:8081",
		Targets: []agentconfig.Target{
			{ServiceName: "cart", ServicePortName: "http", ServicePort: 80, Protocol: agentconfig.TCP, TargetPort: "http",
				ContainerName: "app", ContainerPortName: "http", ContainerPort: 8080, AgentPort: 9900,
				Mode: agentconfig.ModeRename, RenamedPortName: "tm-http"},
			// A headless service on the same container port: same agent port, but redirected.
			{ServiceName: "cart-hl", ServicePort: 8080, Protocol: agentconfig.TCP, TargetPort: "http",
				ContainerName: "app", ContainerPortName: "http", ContainerPort: 8080, AgentPort: 9900, Mode: agentconfig.ModeRedirect},
			{ServiceName: "cart-dns", ServicePort: 53, Protocol: agentconfig.UDP, TargetPort: "5353",
				ContainerName: "dns", ContainerPort: 5353, AgentPort: 9901, Mode: agentconfig.ModeRedirect},
			{Protocol: agentconfig.TCP, ContainerName: "app", ContainerPortName: "debug", ContainerPort: 6060,
				AgentPort: 9902, Mode: agentconfig.ModeRedirect},
		},
	}
}

func TestLoadConfig(t *testing.T) {
	good, err := testConfig().JSON()
	if err != nil {
		t.Fatal(err)
	}
	yml, _ := testConfig().YAML()
	env := map[string]string{agentconfig.EnvConfig: string(good), "BROKEN": "{"}
	files := map[string][]byte{"/etc/agent.yaml": yml}
	getenv := func(k string) string { return env[k] }
	readFile := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	for _, tc := range []struct {
		name    string
		source  string
		wantErr string
		wantIs  error
	}{
		{name: "default env", source: DefaultConfigSource},
		{name: "file", source: "/etc/agent.yaml"},
		{name: "empty env", source: "env:NOPE", wantIs: ErrNoConfig, wantErr: "no agent config: environment variable NOPE is empty"},
		{name: "broken env", source: "env:BROKEN", wantErr: "parse agent config"},
		{name: "missing file", source: "/nope", wantIs: fs.ErrNotExist, wantErr: "read agent config: open /nope: file does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadConfig(tc.source, getenv, readFile)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, testConfig()) {
					t.Errorf("got %+v", got)
				}
				return
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("%v is not %v", err, tc.wantIs)
			}
		})
	}
}

func TestPodFromEnv(t *testing.T) {
	env := map[string]string{agentconfig.EnvPodName: "cart-1", agentconfig.EnvNamespace: "shop", agentconfig.EnvPodIP: "10.244.0.7"}
	got := PodFromEnv(func(k string) string { return env[k] })
	if want := (Pod{Name: "cart-1", Namespace: "shop", IP: "10.244.0.7"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestForwardTargets(t *testing.T) {
	want := []forward.Target{
		{Name: "app/http", Network: "tcp", Listen: ":9900", AppPort: 8080, AgentPort: 9900},
		{Name: "dns/5353", Network: "udp", Listen: ":9901", AppPort: 5353, AgentPort: 9901},
		{Name: "app/debug", Network: "tcp", Listen: ":9902", AppPort: 6060, AgentPort: 9902},
	}
	if got := ForwardTargets(testConfig()); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestRedirectRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(*agentconfig.Config)
		want   []redirect.Redirect
	}{
		{name: "redirect targets, one rule per port, sorted", want: []redirect.Redirect{
			{Protocol: "tcp", AppPort: 6060, AgentPort: 9902},
			{Protocol: "tcp", AppPort: 8080, AgentPort: 9900},
			{Protocol: "udp", AppPort: 5353, AgentPort: 9901},
		}},
		{name: "rename only needs none", config: func(c *agentconfig.Config) { c.Targets = c.Targets[:1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.config != nil {
				tc.config(&cfg)
			}
			if got := RedirectRules(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInstallRedirects(t *testing.T) {
	boom := errors.New("EPERM")
	for _, tc := range []struct {
		name       string
		config     func(*agentconfig.Config)
		installErr error
		wantCalls  int
		wantErr    error
	}{
		{name: "installs", wantCalls: 1},
		{name: "nothing to install", config: func(c *agentconfig.Config) { c.Targets = c.Targets[:1] }},
		{name: "install fails", installErr: boom, wantCalls: 1, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.config != nil {
				tc.config(&cfg)
			}
			calls := 0
			err := InstallRedirects(testLogger(t), cfg, func(rules []redirect.Redirect) error {
				calls++
				if !reflect.DeepEqual(rules, RedirectRules(cfg)) {
					t.Errorf("installing %v", rules)
				}
				return tc.installErr
			})
			if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) {
				t.Errorf("calls %d err %v; want %d, %v", calls, err, tc.wantCalls, tc.wantErr)
			}
		})
	}
}

func freePort(tb testing.TB) uint16 {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Targets = nil
	if _, err := New(testLogger(t), cfg, Pod{}, Options{}); !errors.Is(err, agentconfig.ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
	if _, err := New(nil, testConfig(), Pod{}, Options{}); err == nil {
		t.Error("nil logger accepted")
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Sleep(ctx) }()
	select {
	case <-done:
		t.Fatal("Sleep returned early")
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
