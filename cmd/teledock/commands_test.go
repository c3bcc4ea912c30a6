package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/daemon"
	"teledock.dev/teledock/daemoncontainer/intercept"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/httpfilter"
)

// These tests run the commands against a real daemon API server in the test process, with fakes
// behind it (the session, the intercepts) and in front of Docker, so that requests, gRPC statuses
// and their details cross the real wire.

// fakeIntercepts stands in for the daemon's intercepts.
type fakeIntercepts struct {
	mu        sync.Mutex
	createErr error
	removeErr error
	env       map[string]string
	creates   []intercept.Request
	removes   []string
	list      []*managerv1.InterceptInfo
	workloads []*managerv1.WorkloadInfo
}

func (f *fakeIntercepts) Create(_ context.Context, req intercept.Request) (*managerv1.InterceptInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req)
	if f.createErr != nil {
		return nil, f.createErr
	}
	addr := req.Address
	if !addr.IsValid() {
		addr = netipLoopback
	}
	port := req.LocalPort
	if port == 0 {
		port = 8080 // the container port
	}
	info := &managerv1.InterceptInfo{
		Id: "i-1", Name: req.Name, Workload: cmp.Or(req.Workload, req.Name), WorkloadKind: "Deployment", State: "ACTIVE",
		ServicePortIdentifier: req.ServicePort, Destination: netip.AddrPortFrom(addr, port).String(), LocalPort: int32(port),
		Client: "ann@laptop", Environment: f.env, Filter: proto.CloneOf(req.HTTPFilter), Wiretap: req.Wiretap,
	}
	if httpfilter.Selects(req.HTTPFilter) {
		info.HttpFilter = httpfilter.FromProto(req.HTTPFilter).String()
	}
	if req.Wiretap || info.HttpFilter != "" {
		info.Counters = &managerv1.InterceptCounters{}
	}
	f.list = append(f.list, info)
	return proto.CloneOf(info), nil
}

func (f *fakeIntercepts) Remove(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes = append(f.removes, name)
	if f.removeErr == nil {
		// Gone from List, as in the daemon: the hold of a --docker-run must not remove it again.
		f.list = slices.DeleteFunc(f.list, func(i *managerv1.InterceptInfo) bool { return i.GetName() == name })
	}
	return f.removeErr
}

func (f *fakeIntercepts) DialVolumes(context.Context, string) (net.Conn, error) {
	return nil, errors.New("no volumes in this fake")
}

func (f *fakeIntercepts) List() []*managerv1.InterceptInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.list
}

func (f *fakeIntercepts) Counters(context.Context) (map[string]*managerv1.InterceptCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]*managerv1.InterceptCounters)
	for _, ic := range f.list {
		if c := ic.GetCounters(); c != nil {
			out[ic.GetName()] = c
		}
	}
	return out, nil
}

func (f *fakeIntercepts) Workloads(context.Context, string) (*managerv1.ListWorkloadsResponse, error) {
	return &managerv1.ListWorkloadsResponse{Workloads: f.workloads}, nil
}

func (f *fakeIntercepts) requests() ([]intercept.Request, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]intercept.Request(nil), f.creates...), append([]string(nil), f.removes...)
}

type connectedSession struct{}

func (connectedSession) Info() daemon.SessionInfo {
	return daemon.SessionInfo{State: "connected", ID: "s1"}
}
func (connectedSession) Close() error { return nil }

// daemonDocker is the Docker engine as the launcher sees it: one running daemon container whose API
// is the test's server.
type daemonDocker struct {
	apiPort string
}

func (daemonDocker) ContainerCreate(context.Context, *container.Config, *container.HostConfig, *network.NetworkingConfig, *ocispec.Platform, string) (container.CreateResponse, error) {
	return container.CreateResponse{}, errors.New("not in this test")
}

func (daemonDocker) CopyToContainer(context.Context, string, string, io.Reader, container.CopyToContainerOptions) error {
	return errors.New("not in this test")
}

func (daemonDocker) ContainerStart(context.Context, string, container.StartOptions) error {
	return errors.New("not in this test")
}

func (d daemonDocker) ContainerInspect(_ context.Context, name string) (container.InspectResponse, error) {
	if name != launcher.ContainerName("default") {
		return container.InspectResponse{}, cerrdefs.ErrNotFound
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: "d1", Name: "/" + name, State: &container.State{Status: "running", Running: true}},
		Config:            &container.Config{Labels: map[string]string{launcher.LabelName: "default", launcher.LabelAPIPort: "7777"}},
		NetworkSettings: &container.NetworkSettings{NetworkSettingsBase: container.NetworkSettingsBase{Ports: nat.PortMap{
			"7777/tcp": {{HostIP: "127.0.0.1", HostPort: d.apiPort}},
		}}},
	}, nil
}

func (daemonDocker) ContainerStop(context.Context, string, container.StopOptions) error { return nil }
func (daemonDocker) ContainerRemove(context.Context, string, container.RemoveOptions) error {
	return nil
}
func (daemonDocker) ContainerLogs(context.Context, string, container.LogsOptions) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

type testEnv struct {
	d      deps
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	icpt   *fakeIntercepts
	engine *fakeEngine
}

func startTestDaemon(t *testing.T, icpt *fakeIntercepts) *testEnv {
	t.Helper()
	token := launcher.NewToken()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dm, err := daemon.New(daemon.Config{ListenAddr: "127.0.0.1:0", Token: token, Name: "default"}, connectedSession{}, icpt, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	_, port, _ := net.SplitHostPort(dm.Addr().String())

	store := launcher.NewStore(t.TempDir())
	if err := store.Save(launcher.Connection{Name: "default", Container: launcher.ContainerName("default"), Token: token}); err != nil {
		t.Fatal(err)
	}
	engine := &fakeEngine{containers: map[string]container.InspectResponse{
		launcher.ContainerName("default"): inspected("d1", launcher.ContainerName("default"), true, "default",
			map[string]*network.EndpointSettings{"bridge": {NetworkID: "net-bridge", IPAddress: "172.17.0.2"}}),
		"web": inspected("w1", "web", true, "default",
			map[string]*network.EndpointSettings{"bridge": {NetworkID: "net-bridge", IPAddress: "172.17.0.5"}}),
	}}
	env := &testEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, icpt: icpt, engine: engine}
	env.d = deps{
		stdin:    strings.NewReader(""),
		stdout:   env.stdout,
		stderr:   env.stderr,
		log:      log,
		getenv:   func(string) string { return "" },
		hostname: "laptop",
		launcher: func() (*launcher.Launcher, error) {
			return launcher.New(daemonDocker{apiPort: port}, log)
		},
		docker:      func() (dockerAPI, error) { return engine, nil },
		connections: store,
	}
	return env
}

func interceptOpts(name string) interceptOptions {
	return interceptOptions{name: name, mechanism: "tcp", connection: "default", timeout: 10 * time.Second}
}

func TestRunIntercept(t *testing.T) {
	icpt := &fakeIntercepts{env: map[string]string{"DB_HOST": "db.app", "PORT": "8080"}}
	env := startTestDaemon(t, icpt)
	dir := t.TempDir()
	opts := interceptOpts("multi-echo-http")
	opts.workload, opts.port, opts.toPod = "multi-echo", "8080:http", []string{"9000", "53/UDP"}
	opts.envFile, opts.envJSON = filepath.Join(dir, "pod.env"), filepath.Join(dir, "pod.json")

	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Fatal(err)
	}
	want := `Using Deployment multi-echo
intercepted
    Intercept name         : multi-echo-http
    State                  : ACTIVE
    Workload kind          : Deployment
    Destination            : 127.0.0.1:8080
    Service Port Identifier: http
    Intercepting           : all TCP connections
`
	if got := env.stdout.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	creates, _ := icpt.requests()
	if len(creates) != 1 {
		t.Fatalf("creates = %v", creates)
	}
	r := creates[0]
	if r.Name != "multi-echo-http" || r.Workload != "multi-echo" || r.LocalPort != 8080 || r.ServicePort != "http" ||
		len(r.ToPod) != 2 || !r.ToPod[1].UDP || r.Address.IsValid() {
		t.Errorf("request = %+v", r)
	}
	checkFile(t, opts.envFile, "DB_HOST=db.app\nPORT=8080\n")
	checkFile(t, opts.envJSON, "{\n  \"DB_HOST\": \"db.app\",\n  \"PORT\": \"8080\"\n}\n")
}

func TestRunInterceptAddressContainer(t *testing.T) {
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("echo-easy")
	opts.port, opts.address = "8080", "web"
	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Fatal(err)
	}
	creates, _ := icpt.requests()
	if got := creates[0].Address.String(); got != "172.17.0.5" {
		t.Errorf("address = %s, want the container's IP on the daemon's network", got)
	}
	if !strings.Contains(env.stdout.String(), "Destination   : 172.17.0.5:8080\n") {
		t.Errorf("output:\n%s", env.stdout.String())
	}
}

func TestRunInterceptLocalPortInUse(t *testing.T) {
	icpt := &fakeIntercepts{list: []*managerv1.InterceptInfo{{Name: "a", Destination: "127.0.0.1:8080"}}}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("b")
	opts.port = "8080"
	err := runIntercept(context.Background(), env.d, opts)
	if !errors.Is(err, errLocalPortInUse) || !strings.Contains(err.Error(), "intercept a") {
		t.Fatalf("err = %v, want errLocalPortInUse naming intercept a", err)
	}
	if creates, _ := icpt.requests(); len(creates) != 0 {
		t.Error("the manager was asked although the port is taken")
	}
	// The same name may change its own intercept.
	opts.name = "a"
	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Errorf("changing intercept a: %v", err)
	}
}

func TestRunInterceptErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    error
		wantMsg string
	}{
		{name: "unknown workload", err: status.Error(codes.NotFound, "workload nope not found in namespace app"),
			want: errUnknownWorkload, wantMsg: "intercept echo: workload nope not found in namespace app"},
		{name: "several services", err: status.Error(codes.FailedPrecondition, "services echo-stable, echo-canary select workload echo: pass --service"),
			want: errPrecondition},
		{name: "agent late", err: status.Error(codes.DeadlineExceeded, "traffic-agent not ready: pod echo-1: Failed: ErrImagePull"),
			want: errAgentNotReady, wantMsg: "intercept echo: traffic-agent not ready: pod echo-1: Failed: ErrImagePull"},
		{name: "daemon's port check", err: intercept.ErrLocalPortInUse, want: errLocalPortInUse},
		{name: "not connected", err: intercept.ErrNotConnected, want: errManagerUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startTestDaemon(t, &fakeIntercepts{createErr: tt.err})
			err := runIntercept(context.Background(), env.d, interceptOpts("echo"))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
			if env.stdout.Len() != 0 {
				t.Errorf("output on failure: %q", env.stdout.String())
			}
		})
	}
}

func TestRunLeave(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    error
		wantOut string
	}{
		{name: "ok", wantOut: "Left intercept echo\n"},
		{name: "unknown", err: intercept.ErrNotFound, want: errNoSuchIntercept},
		{name: "manager unreachable", err: status.Error(codes.Unavailable, "port-forward broke"), want: errManagerUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			icpt := &fakeIntercepts{removeErr: tt.err}
			env := startTestDaemon(t, icpt)
			err := runLeave(context.Background(), env.d, leaveOptions{intercept: "echo", connection: "default"})
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := env.stdout.String(); got != tt.wantOut {
				t.Errorf("output = %q, want %q", got, tt.wantOut)
			}
			if _, removes := icpt.requests(); len(removes) != 1 || removes[0] != "echo" {
				t.Errorf("removes = %v", removes)
			}
		})
	}
}

func TestRunLeaveNotConnected(t *testing.T) {
	env := startTestDaemon(t, &fakeIntercepts{})
	err := runLeave(context.Background(), env.d, leaveOptions{intercept: "echo", connection: "other"})
	if !errors.Is(err, errNotConnected) {
		t.Errorf("err = %v, want errNotConnected", err)
	}
}

func TestRunList(t *testing.T) {
	icpt := &fakeIntercepts{workloads: []*managerv1.WorkloadInfo{
		{Name: "web", State: "intercepted", Intercepts: []*managerv1.InterceptInfo{{Name: "web", State: "ACTIVE", Client: "bob@desk"}}},
		{Name: "echo", State: "ready to intercept (traffic-agent not yet installed)"},
	}}
	env := startTestDaemon(t, icpt)
	if err := runList(context.Background(), env.d, listOptions{connection: "default"}); err != nil {
		t.Fatal(err)
	}
	want := `echo: ready to intercept (traffic-agent not yet installed)
web: intercepted
    Intercept name: web
    State         : ACTIVE
    Owner         : bob@desk
`
	if got := env.stdout.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestRunStatusShowsIntercepts(t *testing.T) {
	icpt := &fakeIntercepts{list: []*managerv1.InterceptInfo{{Name: "echo", Client: "ann@laptop"}}}
	env := startTestDaemon(t, icpt)
	if err := runStatus(context.Background(), env.d, statusOptions{name: "default"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.stdout.String(), "  Intercepts        : 1 total\n    echo: ann@laptop\n") {
		t.Errorf("status:\n%s", env.stdout.String())
	}
}

// fakeDockerCLI puts a `docker` on PATH that records its arguments and the env file it is given, and
// exits with code.
func fakeDockerCLI(t *testing.T, code string) (argsFile, envCopy string) {
	t.Helper()
	dir := t.TempDir()
	argsFile, envCopy = filepath.Join(dir, "args"), filepath.Join(dir, "env")
	script := `#!/bin/sh
printf '%s\n' "$@" > "` + argsFile + `"
while [ $# -gt 0 ]; do
  if [ "$1" = "--env-file" ]; then cp "$2" "` + envCopy + `"; fi
  shift
done
echo handler output
exit ` + code + "\n"
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsFile, envCopy
}

func TestRunInterceptDockerRun(t *testing.T) {
	argsFile, envCopy := fakeDockerCLI(t, "3")
	icpt := &fakeIntercepts{env: map[string]string{"DB_HOST": "db.app"}}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("echo")
	opts.port = "8080"
	opts.dockerRun = true
	opts.dockerArgs = []string{"-e", "X=1", "python:3", "python", "-m", "http.server", "8080"}

	err := runIntercept(context.Background(), env.d, opts)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 3 {
		t.Fatalf("err = %v, want the container's exit code 3", err)
	}
	args, rerr := os.ReadFile(argsFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	got := strings.Fields(string(args))
	// The temp env file's name varies; check around it.
	wantPrefix := []string{"run", "--network", "container:teledock-daemon-default", "--env-file"}
	// So does the --cidfile's, which teledock stops the container by. The labels tell a handler
	// left by a killed teledock (removeStaleHandler).
	wantMiddle := []string{"--label", "dev.teledock.handler.connection=default", "--label", "dev.teledock.handler.intercept-id=i-1",
		"--name", "echo", "--rm", "--cidfile"}
	wantSuffix := []string{"-e", "X=1", "python:3", "python", "-m", "http.server", "8080"}
	cid := 5 + len(wantMiddle)
	if len(got) != len(wantPrefix)+1+len(wantMiddle)+1+len(wantSuffix) ||
		strings.Join(got[:4], " ") != strings.Join(wantPrefix, " ") || strings.Join(got[5:cid], " ") != strings.Join(wantMiddle, " ") ||
		strings.Join(got[cid+1:], " ") != strings.Join(wantSuffix, " ") {
		t.Errorf("docker args = %q", got)
	}
	if _, err := os.Stat(got[cid]); !os.IsNotExist(err) {
		t.Errorf("cidfile %s left behind (%v)", got[cid], err)
	}
	if _, err := os.Stat(got[4]); !os.IsNotExist(err) {
		t.Errorf("temporary env file %s left behind (%v)", got[4], err)
	}
	envData, _ := os.ReadFile(envCopy)
	if string(envData) != "DB_HOST=db.app\n" {
		t.Errorf("handler env file = %q", envData)
	}
	if !strings.Contains(env.stdout.String(), "Using Deployment echo\nintercepted\n") || !strings.Contains(env.stdout.String(), "handler output\n") {
		t.Errorf("output:\n%s", env.stdout.String())
	}
	if _, removes := icpt.requests(); len(removes) != 1 || removes[0] != "echo" {
		t.Errorf("intercept not left after the handler exited: removes = %v", removes)
	}
}

func TestRunInterceptDockerRunOwnName(t *testing.T) {
	argsFile, _ := fakeDockerCLI(t, "0")
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("echo")
	opts.dockerRun = true
	opts.dockerArgs = []string{"--rm", "--name", "mine", "img"}
	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(argsFile)
	got := strings.Fields(string(args))
	if strings.Join(got[9:10], " ") != "--cidfile" || strings.Join(got[11:], " ") != "--rm --name mine img" {
		t.Errorf("docker args = %q: teledock must not add --name or a second --rm", got)
	}
}

func TestRunInterceptDockerRunRefusedBeforeCreate(t *testing.T) {
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("echo")
	opts.dockerRun = true
	opts.dockerArgs = []string{"-p", "8080:8080", "img"}
	if err := runIntercept(context.Background(), env.d, opts); err == nil || !strings.Contains(err.Error(), "-p cannot be used") {
		t.Fatalf("err = %v", err)
	}
	if creates, _ := icpt.requests(); len(creates) != 0 {
		t.Error("intercept created although the handler's flags are refused")
	}
}

var netipLoopback = netip.MustParseAddr("127.0.0.1")

// TestDockerRunDebugLogHasNoSecrets: with --docker-run at Debug level, the log shows docker's
// arguments, but neither the pod's Secret values (they go in the --env-file) nor the values of
// the user's own -e flags.
func TestDockerRunDebugLogHasNoSecrets(t *testing.T) {
	fakeDockerCLI(t, "0")
	const podSecret, userSecret, userSecret2, userSecret3 = "pod-s3cr3t", "user-s3cr3t", "user-s3cr3t-2", "user-s3cr3t-3"
	env := startTestDaemon(t, &fakeIntercepts{env: map[string]string{"DB_PASSWORD": podSecret}})
	var logs bytes.Buffer
	env.d.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := interceptOpts("echo")
	opts.dockerRun = true
	opts.dockerArgs = []string{"-e", "TOKEN=" + userSecret, "--env=OTHER=" + userSecret2, "-eTHIRD=" + userSecret3, "--env", "FROM_HOST", "img"}
	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "--env-file") || !strings.Contains(out, "TOKEN=<hidden>") || !strings.Contains(out, "FROM_HOST") {
		t.Fatalf("the debug log does not show docker's arguments:\n%s", out)
	}
	for _, v := range []string{podSecret, userSecret, userSecret2, userSecret3} {
		if strings.Contains(out, v) {
			t.Errorf("the debug log holds the secret %q:\n%s", v, out)
		}
	}
}
