package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/launcher"
)

var testContainer = &launcher.Container{Name: "teledock-daemon-default", Connection: "default", State: "running", Running: true}

func connectedStatus() *daemonv1.StatusResponse {
	return &daemonv1.StatusResponse{
		Version:          "v0.1.0",
		KubeContext:      "kind-dev",
		Server:           "https://127.0.0.1:6443",
		Namespace:        "default",
		ManagerNamespace: "teledock",
		SessionState:     "connected",
		SessionId:        "s-1",
		ConnectionName:   "default",
		NetworkReady:     true,
		Transport:        "direct",
		PodSubnets:       []string{"10.244.0.0/16"},
		ServiceSubnets:   []string{"10.96.0.0/12"},
		Dns: &daemonv1.DNSStatus{
			ResolverAddress: "127.0.0.1:53",
			SearchPath:      []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			TimeoutMs:       8000,
			ClusterDomain:   "cluster.local",
			DnsIp:           "10.96.0.10",
		},
		Manager: &daemonv1.ManagerStatus{Connected: true, Version: "v0.1.0", AgentImage: "teledock/agent:v0.1.0"},
	}
}

func TestRenderStatus(t *testing.T) {
	connecting := &daemonv1.StatusResponse{
		Version: "v0.1.0", KubeContext: "kind-dev", Server: "https://127.0.0.1:6443", Namespace: "default",
		ManagerNamespace: "teledock", SessionState: "connecting",
		LastError: "arrive: traffic-manager has no ready pod: tm-1: ContainerCreating",
	}
	tests := []struct {
		name string
		info statusInfo
		want string
	}{
		{
			name: "not running",
			info: statusInfo{Daemon: daemonStatus{Name: "default"}},
			want: "Daemon: Not running\n",
		},
		{
			name: "exited container",
			info: statusInfo{Daemon: daemonStatus{Name: "default", Container: "teledock-daemon-default", ContainerState: "exited"}},
			want: "Daemon: Not running\n  Container: teledock-daemon-default (exited)\n",
		},
		{
			name: "stopped by a restart of Docker",
			info: statusInfo{Daemon: daemonStatus{Name: "default", Container: "teledock-daemon-default", ContainerState: "exited",
				Stopped: stoppedStatusOf(&launcher.Container{Name: "teledock-daemon-default", State: "exited", ExitCode: 0})}},
			want: "Daemon: Not running\n  Container: teledock-daemon-default (exited)\n" +
				"  Stopped, exit code 0: stopped by Docker (docker stop, or Docker itself stopped or restarted); its session and intercepts ended with it\n" +
				"  Run `teledock connect` to start it again.\n",
		},
		{
			name: "connected",
			info: newStatusInfo(testContainer, connectedStatus()),
			want: `Daemon: Running
  Version           : v0.1.0
  Container         : teledock-daemon-default
  Status            : Connected
  Kubernetes server : https://127.0.0.1:6443
  Kubernetes context: kind-dev
  Namespace         : default
  Manager namespace : teledock
  Network           : Ready
  Transport         : direct
  Intercepts        : 0 total
  DNS               :
    Resolver address: 127.0.0.1:53
    Search path     : [default.svc.cluster.local svc.cluster.local cluster.local]
    Timeout         : 8s
    Cluster domain  : cluster.local
    Cluster DNS     : 10.96.0.10
  Subnets           : (2 subnets)
    - 10.96.0.0/12
    - 10.244.0.0/16
Traffic Manager: Connected
  Version    : v0.1.0
  Agent image: teledock/agent:v0.1.0
`,
		},
		{
			name: "intercepts",
			info: newStatusInfo(testContainer, withIntercepts(connecting)),
			want: `Daemon: Running
  Version           : v0.1.0
  Container         : teledock-daemon-default
  Status            : Connected
  Kubernetes server : https://127.0.0.1:6443
  Kubernetes context: kind-dev
  Namespace         : default
  Manager namespace : teledock
  Network           : Not started
  Intercepts        : 2 total
    dataprocessingnodeservice: ann@laptop
    echo: ann@laptop
`,
		},
		{
			name: "connecting with error",
			info: newStatusInfo(testContainer, connecting),
			want: `Daemon: Running
  Version           : v0.1.0
  Container         : teledock-daemon-default
  Status            : Connecting
  Error             : arrive: traffic-manager has no ready pod: tm-1: ContainerCreating
  Kubernetes server : https://127.0.0.1:6443
  Kubernetes context: kind-dev
  Namespace         : default
  Manager namespace : teledock
  Network           : Not started
  Intercepts        : 0 total
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renderStatus(tt.info); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// withIntercepts is st, connected, with two intercepts.
func withIntercepts(st *daemonv1.StatusResponse) *daemonv1.StatusResponse {
	c := proto.CloneOf(st)
	c.SessionState, c.LastError = "connected", ""
	c.Intercepts = 2
	c.InterceptList = []*daemonv1.InterceptSummary{
		{Name: "dataprocessingnodeservice", Owner: "ann@laptop"},
		{Name: "echo", Owner: "ann@laptop"},
	}
	return c
}

func TestWriteStatusJSON(t *testing.T) {
	tests := []struct {
		name string
		info statusInfo
		want map[string]any // a few fields that scripts rely on
	}{
		{
			name: "not running",
			info: statusInfo{Daemon: daemonStatus{Name: "default"}},
			want: map[string]any{"daemon.running": false, "daemon.name": "default"},
		},
		{
			name: "connected",
			info: newStatusInfo(testContainer, connectedStatus()),
			want: map[string]any{
				"daemon.running": true, "daemon.status": "connected", "daemon.kubernetes_context": "kind-dev",
				"daemon.dns.timeout": "8s", "daemon.network_ready": true, "traffic_manager.connected": true,
				"traffic_manager.agent_image": "teledock/agent:v0.1.0", "daemon.transport": "direct",
			},
		},
		{
			name: "intercepts",
			info: newStatusInfo(testContainer, withIntercepts(connectedStatus())),
			want: map[string]any{"daemon.intercepts": float64(2)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeStatus(&buf, tt.info, "json"); err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, buf.String())
			}
			for path, want := range tt.want {
				if got := lookup(doc, path); got != want {
					t.Errorf("%s = %v, want %v", path, got, want)
				}
			}
			if tt.info.TrafficManager == nil {
				if _, ok := doc["traffic_manager"]; ok {
					t.Errorf("traffic_manager present when unknown")
				}
			}
		})
	}
}

func TestWriteStatusYAML(t *testing.T) {
	var buf bytes.Buffer
	if err := writeStatus(&buf, newStatusInfo(testContainer, connectedStatus()), "yaml"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("kubernetes_context: kind-dev\n")) {
		t.Errorf("yaml:\n%s", buf.String())
	}
}

// lookup follows a dotted path through decoded JSON objects.
func lookup(doc map[string]any, path string) any {
	var cur any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// lineWriter sends each line written to it.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func TestStatusWatchJSON(t *testing.T) {
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	out := &lineWriter{lines: make(chan string, 10)}
	d := env.d
	d.stdout = out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runStatus(ctx, d, statusOptions{output: "json", name: "default", watch: true, every: 20 * time.Millisecond})
	}()
	next := func() statusInfo {
		t.Helper()
		select {
		case l := <-out.lines:
			var s statusInfo
			if err := json.Unmarshal([]byte(l), &s); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no status line")
		}
		return statusInfo{}
	}
	first := next()
	if first.SchemaVersion != schemaVersion || !first.Daemon.Running || first.Daemon.Intercepts != 0 {
		t.Errorf("first status %+v", first)
	}
	// Nothing changes: nothing more is printed.
	select {
	case l := <-out.lines:
		t.Errorf("a line without a change: %s", l)
	case <-time.After(150 * time.Millisecond):
	}
	icpt.mu.Lock()
	icpt.list = append(icpt.list, &managerv1.InterceptInfo{Name: "echo", Client: "ann@laptop"})
	icpt.mu.Unlock()
	if second := next(); second.Daemon.Intercepts != 1 || second.Daemon.InterceptList[0].Name != "echo" {
		t.Errorf("status after the intercept: %+v", second.Daemon)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch ended with %v, want nil on interrupt", err)
	}
}

func TestStoppedStatusOf(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	for _, tc := range []struct {
		c    launcher.Container
		want string
	}{
		{launcher.Container{State: "exited", ExitCode: 0, FinishedAt: at}, "stopped by Docker"},
		{launcher.Container{State: "exited", ExitCode: 143}, "stopped by Docker"},
		{launcher.Container{State: "exited", ExitCode: 137}, "killed (docker kill"},
		{launcher.Container{State: "exited", ExitCode: 137, OOMKilled: true}, "out of memory"},
		{launcher.Container{Name: "teledock-daemon-x", State: "exited", ExitCode: 1}, "docker logs teledock-daemon-x"},
		{launcher.Container{State: "created"}, "never started"},
	} {
		st := stoppedStatusOf(&tc.c)
		if !strings.Contains(st.Reason, tc.want) || st.ExitCode != tc.c.ExitCode || !st.FinishedAt.Equal(tc.c.FinishedAt) {
			t.Errorf("%+v: %+v, want a reason with %q", tc.c, st, tc.want)
		}
	}
	var b strings.Builder
	if err := writeStatus(&b, statusInfo{Daemon: daemonStatus{Stopped: stoppedStatusOf(&launcher.Container{State: "exited", FinishedAt: at})}}, "json"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"finished_at": "2026-12-06T01:02:03Z"`) {
		t.Errorf("status -o json:\n%s", b.String())
	}
}
