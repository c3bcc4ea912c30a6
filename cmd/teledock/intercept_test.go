package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/mounts"
)

func TestParsePort(t *testing.T) {
	tests := []struct {
		in        string
		wantLocal uint16
		wantSvc   string
		wantErr   string
	}{
		{in: "", wantLocal: 0},
		{in: "8080", wantLocal: 8080},
		{in: "8080:http", wantLocal: 8080, wantSvc: "http"},
		{in: "8443:grpc-web", wantLocal: 8443, wantSvc: "grpc-web"},
		{in: "9000:80", wantLocal: 9000, wantSvc: "80"},
		{in: "1:65535", wantLocal: 1, wantSvc: "65535"},
		{in: "http", wantErr: "local port"},
		{in: ":http", wantErr: "local port"},
		{in: "0", wantErr: "not a port number"},
		{in: "65536", wantErr: "not a port number"},
		{in: "8080:", wantErr: "empty service port"},
		{in: "8080:70000", wantErr: "service port"},
		{in: "8080:Not_A_Name", wantErr: "neither a number nor a port name"},
		{in: "8080:http:x", wantErr: "neither a number nor a port name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			local, svc, err := parsePort(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || local != tt.wantLocal || svc != tt.wantSvc {
				t.Errorf("parsePort(%q) = %d, %q, %v; want %d, %q", tt.in, local, svc, err, tt.wantLocal, tt.wantSvc)
			}
		})
	}
}

func TestParseToPod(t *testing.T) {
	tests := []struct {
		in      string
		want    *managerv1.ToPod
		wantErr bool
	}{
		{in: "8081", want: &managerv1.ToPod{Port: 8081, Protocol: managerv1.Protocol_PROTOCOL_TCP}},
		{in: "8081/TCP", want: &managerv1.ToPod{Port: 8081, Protocol: managerv1.Protocol_PROTOCOL_TCP}},
		{in: "53/UDP", want: &managerv1.ToPod{Port: 53, Protocol: managerv1.Protocol_PROTOCOL_UDP}},
		{in: "53/udp", want: &managerv1.ToPod{Port: 53, Protocol: managerv1.Protocol_PROTOCOL_UDP}},
		{in: "53/SCTP", wantErr: true},
		{in: "0", wantErr: true},
		{in: "x/UDP", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseToPod(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (got.GetPort() != tt.want.GetPort() || got.GetProtocol() != tt.want.GetProtocol()) {
				t.Errorf("parseToPod(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestInterceptRequest(t *testing.T) {
	opts := interceptOptions{
		name: "multi-echo-http", workload: "multi-echo", port: "8080:http", mechanism: "tcp",
		toPod: []string{"9000", "53/UDP"}, replace: true, connection: "default", timeout: 1,
	}
	req, err := opts.request()
	if err != nil {
		t.Fatal(err)
	}
	if req.GetName() != "multi-echo-http" || req.GetWorkload() != "multi-echo" || req.GetLocalPort() != 8080 ||
		req.GetServicePort() != "http" || !req.GetReplace() || len(req.GetToPod()) != 2 || req.GetMechanism() != "tcp" {
		t.Errorf("request = %v", req)
	}

	bad := []struct {
		name   string
		modify func(*interceptOptions)
		want   string
	}{
		{name: "mechanism", modify: func(o *interceptOptions) { o.mechanism = "http" }, want: "only tcp"},
		{name: "output", modify: func(o *interceptOptions) { o.output = "yaml" }, want: "unknown output format"},
		{name: "to-pod", modify: func(o *interceptOptions) { o.toPod = []string{"x"} }, want: "--to-pod"},
		{name: "connection", modify: func(o *interceptOptions) { o.connection = "../x" }, want: "invalid connection name"},
		{name: "port", modify: func(o *interceptOptions) { o.port = "http" }, want: "--port"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			o := opts
			tt.modify(&o)
			if _, err := o.request(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestCheckHandlerArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantName string
		wantRm   bool
		wantErr  string
	}{
		{name: "image", args: []string{"python:3", "python", "-m", "http.server", "8080"}},
		{name: "own name and rm", args: []string{"--rm", "--name", "web", "-e", "A=1", "img"}, wantName: "web", wantRm: true},
		{name: "name with =", args: []string{"--name=web", "img"}, wantName: "web"},
		{name: "detach", args: []string{"-d", "img"}, wantErr: "--detach cannot be used"},
		{name: "detach grouped", args: []string{"-dit", "img"}, wantErr: "--detach cannot be used"},
		{name: "network", args: []string{"--network", "host", "img"}, wantErr: "--network cannot be used with intercept --docker-run"},
		{name: "publish", args: []string{"-p", "80:80", "img"}, wantErr: "-p cannot be used with intercept --docker-run"},
		{name: "no image", args: []string{"--rm"}, wantErr: "no image"},
		{name: "nothing", wantErr: "no image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkHandlerArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.name != tt.wantName || got.rm != tt.wantRm {
				t.Errorf("got %+v, %v; want name %q rm %v", got, err, tt.wantName, tt.wantRm)
			}
		})
	}
}

// The blocks below are the seed's, with its placeholders filled in.
func TestRenderIntercept(t *testing.T) {
	tests := []struct {
		name string
		info *managerv1.InterceptInfo
		want string
	}{
		{
			name: "service port identifier",
			info: &managerv1.InterceptInfo{Name: "multi-echo-http", State: "ACTIVE", Workload: "multi-echo", WorkloadKind: "Deployment",
				Destination: "127.0.0.1:8080", ServicePortIdentifier: "http"},
			want: `Using Deployment multi-echo
intercepted
    Intercept name         : multi-echo-http
    State                  : ACTIVE
    Workload kind          : Deployment
    Destination            : 127.0.0.1:8080
    Service Port Identifier: http
    Intercepting           : all TCP connections
`,
		},
		{
			name: "no identifier, mount point",
			info: &managerv1.InterceptInfo{Name: "my-headless", State: "ACTIVE", Workload: "my-headless", WorkloadKind: "StatefulSet",
				Destination: "127.0.0.1:8080", MountPoint: "/tmp/telfs-524189712"},
			want: `Using StatefulSet my-headless
intercepted
    Intercept name    : my-headless
    State             : ACTIVE
    Workload kind     : StatefulSet
    Destination       : 127.0.0.1:8080
    Volume Mount Point: /tmp/telfs-524189712
    Intercepting      : all TCP connections
`,
		},
		{
			name: "service-less with pod address",
			info: &managerv1.InterceptInfo{Name: "echo-no-svc", State: "ACTIVE", Workload: "echo-no-svc", WorkloadKind: "Deployment",
				Destination: "127.0.0.1:8080", PodAddress: "10.244.0.13:8080", ServiceLess: true},
			want: `Using Deployment echo-no-svc
intercepted
    Intercept name: echo-no-svc
    State         : ACTIVE
    Workload kind : Deployment
    Destination   : 127.0.0.1:8080
    Intercepting  : all TCP connections
    Address       : 10.244.0.13:8080
`,
		},
		{
			name: "address",
			info: &managerv1.InterceptInfo{Name: "echo-easy", State: "ACTIVE", Workload: "echo-easy", WorkloadKind: "ReplicaSet",
				Destination: "172.16.0.19:8080", ServicePortIdentifier: "proxied"},
			want: `Using ReplicaSet echo-easy
intercepted
    Intercept name         : echo-easy
    State                  : ACTIVE
    Workload kind          : ReplicaSet
    Destination            : 172.16.0.19:8080
    Service Port Identifier: proxied
    Intercepting           : all TCP connections
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renderIntercept(tt.info); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestWriteInterceptJSON(t *testing.T) {
	var b strings.Builder
	info := &managerv1.InterceptInfo{Id: "i-1", Name: "echo", State: "ACTIVE", Workload: "echo", WorkloadKind: "Deployment",
		Destination: "127.0.0.1:8080", Client: "me@laptop", Environment: map[string]string{"SECRET": "x"},
		ToPod: []*managerv1.ToPod{{Port: 53, Protocol: managerv1.Protocol_PROTOCOL_UDP}}}
	vols := &mountReport{Root: "/", Mode: "plugin", Volumes: []mounts.Volume{{Name: "teledock-default-echo-0", Path: "/etc/config", ReadOnly: true}}}
	if err := writeIntercept(&b, info, vols, "json"); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "echo" || got["destination"] != "127.0.0.1:8080" || got["intercepting"] != "all TCP connections" || got["owner"] != "me@laptop" {
		t.Errorf("json = %s", b.String())
	}
	if strings.Contains(b.String(), "SECRET") {
		t.Error("the environment leaked into the JSON output")
	}
	if got["mount_mode"] != "plugin" || len(got["volumes"].([]any)) != 1 {
		t.Errorf("json volumes = %s", b.String())
	}
}

func TestWriteInterceptMountError(t *testing.T) {
	var b strings.Builder
	info := &managerv1.InterceptInfo{Name: "echo", State: "ACTIVE", Workload: "echo", WorkloadKind: "Deployment", Destination: "127.0.0.1:8080"}
	if err := writeIntercept(&b, info, &mountReport{Root: "/", Error: "volume plugin: enable: refused"}, ""); err != nil {
		t.Fatal(err)
	}
	want := "Using Deployment echo\n" +
		"intercepted\n" +
		"    Intercept name    : echo\n" +
		"    State             : ACTIVE\n" +
		"    Workload kind     : Deployment\n" +
		"    Destination       : 127.0.0.1:8080\n" +
		"    Volume Mount Error: volume plugin: enable: refused\n" +
		"    Intercepting      : all TCP connections\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestMountOptions(t *testing.T) {
	for in, want := range map[string]string{"": "/", "true": "/", "TRUE": "/", "false": "", "/tmp/pod/": "/tmp/pod"} {
		got, err := mountOptions{mount: in}.root()
		if err != nil || got != want {
			t.Errorf("--mount=%q: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := (mountOptions{mount: "relative"}).root(); err == nil {
		t.Error("--mount=relative accepted")
	}
	o := interceptOpts("echo")
	o.mount.mode = "fast"
	if _, err := o.request(); err == nil || !strings.Contains(err.Error(), "auto, plugin or copy") {
		t.Errorf("--mount-mode fast: %v", err)
	}
}

func TestRenderWorkloads(t *testing.T) {
	tests := []struct {
		name string
		in   []*managerv1.WorkloadInfo
		want string
	}{
		{name: "none", want: "No interceptable workloads (Deployments, ReplicaSets, StatefulSets) in the connection's namespace\n"},
		{
			name: "seed and intercepted",
			in: []*managerv1.WorkloadInfo{
				{Name: "echo-no-svc", State: "ready to intercept (traffic-agent not yet installed)"},
				{Name: "web", State: "intercepted", Intercepts: []*managerv1.InterceptInfo{{Name: "web", State: "ACTIVE", Client: "ann@laptop"}}},
			},
			want: `echo-no-svc: ready to intercept (traffic-agent not yet installed)
web: intercepted
    Intercept name: web
    State         : ACTIVE
    Owner         : ann@laptop
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renderWorkloads(tt.in); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestEnvFileLines(t *testing.T) {
	data, skipped := envFileLines(map[string]string{
		"B":          "two words",
		"A":          "1",
		"EMPTY":      "",
		"EQ":         "a=b",
		"MULTI":      "line1\nline2",
		"CR":         "x\r",
		"BAD NAME":   "x",
		"#COMMENT":   "x",
		"QUOTED":     `"kept as is"`,
		"LEADING_SP": "  x",
	})
	want := "A=1\nB=two words\nEMPTY=\nEQ=a=b\nLEADING_SP=  x\nQUOTED=\"kept as is\"\n"
	if string(data) != want {
		t.Errorf("got:\n%s\nwant:\n%s", data, want)
	}
	if wantSkipped := []string{"#COMMENT", "BAD NAME", "CR", "MULTI"}; !slices.Equal(skipped, wantSkipped) {
		t.Errorf("skipped = %q, want %q", skipped, wantSkipped)
	}
}

func TestWriteEnvFiles(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"A": "1", "MULTI": "x\ny"}

	envPath := filepath.Join(dir, "pod.env")
	// An existing world-readable file must not stay so once it holds secrets.
	if err := os.WriteFile(envPath, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	skipped, err := writeEnvFile(envPath, env)
	if err != nil || !slices.Equal(skipped, []string{"MULTI"}) {
		t.Fatalf("writeEnvFile = %q, %v", skipped, err)
	}
	checkFile(t, envPath, "A=1\n")

	jsonPath := filepath.Join(dir, "pod.json")
	if skipped, err := writeEnvJSON(jsonPath, env); err != nil || len(skipped) != 0 {
		t.Fatalf("writeEnvJSON = %q, %v", skipped, err)
	}
	checkFile(t, jsonPath, "{\n  \"A\": \"1\",\n  \"MULTI\": \"x\\ny\"\n}\n")

	emptyPath := filepath.Join(dir, "empty.json")
	if _, err := writeEnvJSON(emptyPath, nil); err != nil {
		t.Fatal(err)
	}
	checkFile(t, emptyPath, "{}\n")

	tmp, _, err := tempEnvFile(env)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp)
	checkFile(t, tmp, "A=1\n")
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", filepath.Base(path), got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", filepath.Base(path), fi.Mode().Perm())
	}
}

func withDetail(t *testing.T, code codes.Code, msg string, ec daemonv1.ErrorCode) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(&daemonv1.ErrorDetail{Code: ec})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestInterceptErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		want    error
		wantMsg string
	}{
		{name: "unknown workload", err: status.Error(codes.NotFound, "workload nope not found in namespace app"),
			want: errUnknownWorkload, wantMsg: "intercept echo: workload nope not found in namespace app"},
		{name: "several services", err: status.Error(codes.FailedPrecondition, "services echo-stable and echo-canary select echo"),
			want: errPrecondition},
		{name: "port not found", err: status.Error(codes.FailedPrecondition, "service echo has no port grpc"), want: errPrecondition},
		{name: "intercepted elsewhere", err: status.Error(codes.FailedPrecondition, "echo is intercepted by bob@desk"), want: errPrecondition},
		{name: "name taken", err: status.Error(codes.AlreadyExists, "intercept echo exists"), want: errAlreadyExists},
		{name: "agent late", err: status.Error(codes.DeadlineExceeded, "traffic-agent not ready after 2m: pod echo-1: ImagePullBackOff"),
			want: errAgentNotReady, wantMsg: "intercept echo: traffic-agent not ready after 2m: pod echo-1: ImagePullBackOff"},
		{name: "local port", err: withDetail(t, codes.FailedPrecondition, "127.0.0.1:8080 is the destination of intercept a", daemonv1.ErrorCode_ERROR_CODE_LOCAL_PORT_IN_USE),
			want: errLocalPortInUse},
		{name: "to-pod port", err: withDetail(t, codes.FailedPrecondition, "address in use", daemonv1.ErrorCode_ERROR_CODE_TO_POD_PORT_IN_USE),
			want: errToPodPortInUse},
		{name: "not connected", err: withDetail(t, codes.Unavailable, "no session", daemonv1.ErrorCode_ERROR_CODE_NOT_CONNECTED),
			want: errManagerUnreachable},
		{name: "old manager", err: status.Error(codes.Unimplemented, "unknown method CreateIntercept"), want: errUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := interceptError("echo", tt.err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
			if hint(err) == "" {
				t.Errorf("no hint for %v", err)
			}
		})
	}
}

func TestFromDaemonKeepsOtherErrors(t *testing.T) {
	plain := errors.New("plain")
	if got := fromDaemon(plain); got != plain {
		t.Errorf("fromDaemon(plain) = %v", got)
	}
	if got := fromDaemon(nil); got != nil {
		t.Errorf("fromDaemon(nil) = %v", got)
	}
	if got := fromDaemon(status.Error(codes.Internal, "boom")); !strings.Contains(got.Error(), "boom") {
		t.Errorf("fromDaemon(internal) = %v", got)
	}
}

func TestPluginName(t *testing.T) {
	for image, want := range map[string]string{
		"teledock/daemon:v1.2.3":           "teledock/volumes:v1.2.3",
		"localhost:5000/teledock/daemon":   "teledock/volumes:latest",
		"localhost:5000/teledock/daemon:x": "teledock/volumes:x",
	} {
		if got := pluginName(image); got != want {
			t.Errorf("pluginName(%q) = %q, want %q", image, got, want)
		}
	}
}
