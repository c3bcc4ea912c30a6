//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/e2e/pattern"
)

const managerNamespace = "teledock"

func teledock(t testing.TB, args ...string) cmdResult {
	t.Helper()
	return run(t, 3*time.Minute, cfg.teledock, args...)
}

var installOnce sync.Once

// ensureManager installs the traffic-manager once per suite run (install is idempotent).
func ensureManager(t testing.TB) {
	t.Helper()
	var r cmdResult
	installOnce.Do(func() {
		r = teledock(t, "install", "--kubeconfig", cfg.kubeconfig, "--manager-namespace", managerNamespace,
			"--image", image("traffic-manager"))
	})
	must(t, r, "teledock install")
}

// connect starts a connection named after the test to ns and quits it when the test ends.
func connect(t testing.TB, ns string) string {
	t.Helper()
	return connectAs(t, ns, connName(t, ""))
}

// connName is a connection name for the test, with an optional suffix.
func connName(t testing.TB, suffix string) string {
	name := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 30 {
		name = name[:30]
	}
	return name + suffix
}

func connectAs(t testing.TB, ns, name string) string {
	t.Helper()
	t.Cleanup(func() { teledock(t, "quit", "--name", name) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", name,
		"--manager-namespace", managerNamespace, "--image", image("daemon")), "teledock connect")
	return name
}

// inCluster runs /probe ARGS in a container joined to the connection's network namespace.
func inCluster(t testing.TB, conn string, args ...string) cmdResult {
	t.Helper()
	return teledock(t, append([]string{"run", "--connection", conn, "--rm", "--entrypoint", "/probe", image("echo"), "-timeout", "60s"}, args...)...)
}

func TestConnectReachesTheCluster(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	apply(t, ns, "statefulset.yaml", echoApp{Image: image("echo"), Text: "hello from web"})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "statefulset/web", "--timeout=120s"), "statefulset rollout")
	clusterIP := jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")
	podIP := jsonpath(t, ns, "pods -l app=echo", "{.items[0].status.podIP}")
	conn := connect(t, ns)

	for _, url := range []string{
		"http://echo/",
		"http://echo." + ns + "/",
		"http://echo." + ns + ".svc.cluster.local/",
		"http://" + clusterIP + "/",
		"http://" + podIP + ":8080/",
	} {
		out := must(t, inCluster(t, conn, "http", url), "GET "+url)
		if !strings.HasPrefix(out, app.Text+" from echo-") {
			t.Errorf("GET %s = %q, want the echo pod's greeting", url, out)
		}
	}
	out := must(t, inCluster(t, conn, "http", "http://web-0.web."+ns+":8080/"), "GET a StatefulSet pod by name")
	if !strings.HasPrefix(out, "hello from web from web-0") {
		t.Errorf("GET web-0.web.%s = %q, want web-0's greeting", ns, out)
	}
	out = must(t, inCluster(t, conn, "udp", "echo:8081", "ping"), "UDP round trip")
	if strings.TrimSpace(out) != app.Text+": ping" {
		t.Errorf("UDP echo = %q, want %q", out, app.Text+": ping")
	}

	out = must(t, inCluster(t, conn, "rdns", clusterIP), "reverse lookup of the ClusterIP")
	if want := "echo." + ns + ".svc.cluster.local."; strings.TrimSpace(out) != want {
		t.Errorf("reverse lookup of %s = %q, want %q", clusterIP, out, want)
	}
	// Names outside the cluster still go to the host's resolver (here: none answers, so the
	// lookup must fail rather than be answered by the cluster).
	if r := inCluster(t, conn, "dns", "echo.example.invalid"); r.err == nil {
		t.Errorf("echo.example.invalid resolved: %s", r.stdout)
	}

	checkGiBBothWays(t, conn)
}

// checkGiBBothWays moves 1 GiB each way between a container of conn and the echo Service and
// checks both checksums: the tunnel loses, reorders and duplicates nothing.
func checkGiBBothWays(t *testing.T, conn string) {
	t.Helper()
	const n = 1 << 30
	want := fmt.Sprintf("%s %d", pattern.SHA256(n), n)
	transfer := func(args ...string) string {
		return must(t, teledock(t, append([]string{"run", "--connection", conn, "--rm", "--entrypoint", "/probe", image("echo"), "-timeout", "5m"}, args...)...), args[0])
	}
	if out := transfer("download", fmt.Sprintf("http://echo/bytes?n=%d", n)); strings.TrimSpace(out) != want {
		t.Errorf("1 GiB download: %q, want %q", out, want)
	}
	if out := transfer("upload", "http://echo/sha256", fmt.Sprint(n)); strings.TrimSpace(out) != want {
		t.Errorf("1 GiB upload: %q, want %q", out, want)
	}
}

type statusJSON struct {
	Daemon struct {
		Running        bool   `json:"running"`
		Status         string `json:"status"` // the session: connecting, connected, reconnecting
		Namespace      string `json:"namespace"`
		Container      string `json:"container"`
		Transport      string `json:"transport"`
		TransportError string `json:"transport_error"`
	} `json:"daemon"`
	TrafficManager struct {
		Connected bool `json:"connected"`
	} `json:"traffic_manager"`
}

func status(t testing.TB, conn string) statusJSON {
	t.Helper()
	out := must(t, teledock(t, "status", "--name", conn, "-o", "json"), "teledock status")
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, out)
	}
	return s
}

func TestStatusQuitAndLease(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	name := connName(t, "")
	if s := status(t, name); s.Daemon.Running {
		t.Fatalf("status before connect says running: %+v", s)
	}
	text := must(t, teledock(t, "status", "--name", name), "status text")
	if !strings.Contains(text, "Not running") {
		t.Errorf("status text before connect = %q, want it to say Not running", text)
	}

	conn := connect(t, ns)
	s := status(t, conn)
	if !s.Daemon.Running || s.Daemon.Namespace != ns || !s.TrafficManager.Connected {
		t.Fatalf("status after connect: %+v", s)
	}
	text = must(t, teledock(t, "status", "--name", conn), "status text")
	for _, want := range []string{"Running", ns, "Connected"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}
	mgr := managerClient(t)
	if n := sessionsNamed(t, mgr, conn); n != 1 {
		t.Fatalf("manager has %d sessions for %s, want 1", n, conn)
	}
	// What every pod reaches, the Service, serves the agents only: no session list from there.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := managerAt(t, "service/traffic-manager", 8081).ListSessions(ctx, &managerv1.ListSessionsRequest{})
	cancel()
	if grpcstatus.Code(err) != codes.PermissionDenied {
		t.Errorf("ListSessions through the manager's Service: %v, want PermissionDenied", err)
	}

	// A daemon that vanishes without a word: the manager drops its session within the lease.
	must(t, docker(t, "kill", s.Daemon.Container), "kill the daemon container")
	eventually(t, 20*time.Second, "the manager drops the dead client's session", func() error {
		if n := sessionsNamed(t, mgr, conn); n != 0 {
			return fmt.Errorf("%d sessions left", n)
		}
		return nil
	})
	must(t, teledock(t, "quit", "--name", conn), "quit")
	if out := must(t, docker(t, "ps", "-aq", "--filter", "label=teledock.dev/name="+conn), "docker ps"); strings.TrimSpace(out) != "" {
		t.Errorf("quit left containers: %s", out)
	}
}

func TestQuitEndsTheSession(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	conn := connect(t, ns)
	mgr := managerClient(t)
	must(t, teledock(t, "quit", "--name", conn), "quit")
	if n := sessionsNamed(t, mgr, conn); n != 0 {
		t.Errorf("after quit the manager still has %d sessions for %s", n, conn)
	}
	if out := must(t, docker(t, "ps", "-aq", "--filter", "label=teledock.dev/name="+conn), "docker ps"); strings.TrimSpace(out) != "" {
		t.Errorf("quit left containers: %s", out)
	}
	// quit is idempotent.
	must(t, teledock(t, "quit", "--name", conn), "second quit")
}

// TestConnectAgainKeepsTheDaemon: connect is idempotent, and a second connect that gives up
// waiting (here: a deadline too short to ask the daemon anything) must not take the running daemon,
// and with it the user's intercepts and handler containers, away.
func TestConnectAgainKeepsTheDaemon(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	conn := connect(t, ns)
	before := status(t, conn).Daemon.Container
	args := []string{"connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", managerNamespace, "--image", image("daemon")}
	out := must(t, teledock(t, args...), "second connect")
	if !strings.Contains(out, "Connected to context") {
		t.Errorf("second connect printed %q, want Connected", out)
	}
	r := teledock(t, append(args, "--timeout", "1ns")...)
	if r.err == nil {
		t.Fatalf("connect --timeout 1ns succeeded: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "still runs") {
		t.Errorf("a failed connect to a running daemon does not say it still runs: %s", r.stderr)
	}
	s := status(t, conn)
	if !s.Daemon.Running || s.Daemon.Container != before || !s.TrafficManager.Connected {
		t.Errorf("after a failed second connect: %+v, want the same daemon %s running and connected", s, before)
	}
}

func TestTwoConnectionsSideBySide(t *testing.T) {
	ensureManager(t)
	ns1, ns2 := newNamespace(t), newNamespace(t)
	app1, app2 := deployEcho(t, ns1, "echo"), deployEcho(t, ns2, "echo")
	c1, c2 := connectAs(t, ns1, connName(t, "-a")), connectAs(t, ns2, connName(t, "-b"))
	for _, c := range []struct{ conn, want string }{{c1, app1.Text}, {c2, app2.Text}} {
		out := must(t, inCluster(t, c.conn, "http", "http://echo/"), "GET http://echo/ through "+c.conn)
		if !strings.HasPrefix(out, c.want+" from echo-") {
			t.Errorf("through %s, http://echo/ = %q, want %q (each connection sees its own namespace)", c.conn, out, c.want)
		}
	}
}

func TestConnectErrors(t *testing.T) {
	ensureManager(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no manager", []string{"--manager-namespace", "no-such-manager"}, "teledock install"},
		{"bad context", []string{"--context", "no-such-context"}, "no-such-context"},
		{"bad kubeconfig", []string{"--kubeconfig", "/nonexistent/kubeconfig"}, "/nonexistent/kubeconfig"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := "e2e-err-" + strings.ReplaceAll(c.name, " ", "-")
			args := append([]string{"connect", "--name", name, "--image", image("daemon"), "--kubeconfig", cfg.kubeconfig}, c.args...)
			r := teledock(t, args...)
			t.Cleanup(func() { teledock(t, "quit", "--name", name) })
			if r.err == nil {
				t.Fatalf("connect with %v succeeded", c.args)
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("error %q does not name %q", r.stderr, c.want)
			}
			if out := must(t, docker(t, "ps", "-aq", "--filter", "label=teledock.dev/name="+name), "docker ps"); strings.TrimSpace(out) != "" {
				t.Errorf("a failed connect left containers: %s", out)
			}
		})
	}
}

// managerClient talks to the traffic-manager through a kubectl port-forward (the tests' own view).
// managerClient reaches the manager's clients' endpoint, on its pod's loopback, as teledock does.
func managerClient(t testing.TB) managerv1.ManagerClient {
	t.Helper()
	return managerAt(t, "deployment/traffic-manager", 8082)
}

// managerAt reaches the manager through `kubectl port-forward target port`.
func managerAt(t testing.TB, target string, remote int) managerv1.ManagerClient {
	t.Helper()
	port := portForward(t, managerNamespace, target, remote)
	cc, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return managerv1.NewManagerClient(cc)
}

func sessionsNamed(t testing.TB, mgr managerv1.ManagerClient, name string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := mgr.ListSessions(ctx, &managerv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	n := 0
	for _, s := range resp.GetSessions() {
		if s.GetClient().GetName() == name {
			n++
		}
	}
	return n
}

// run passes the container's exit code through and refuses flags that would break the join.
func TestRunExitCodeAndRefusedFlags(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	conn := connect(t, ns)
	r := inCluster(t, conn, "tcp", "127.0.0.1:1") // nothing listens: /probe exits 1
	if code := exitCode(r.err); code != 1 {
		t.Errorf("run of a failing container exited %d (%v), want 1", code, r.err)
	}
	for _, flag := range [][]string{{"-p", "8080:80"}, {"--network", "host"}, {"--net=bridge"}} {
		args := append(append([]string{"run", "--connection", conn, "--rm", "--name", "e2e-refused"}, flag...), image("echo"))
		r := teledock(t, args...)
		if r.err == nil {
			t.Errorf("run with %v succeeded", flag)
		} else if !strings.Contains(r.stderr, strings.SplitN(flag[0], "=", 2)[0]) {
			t.Errorf("run with %v: error does not name the flag: %s", flag, r.stderr)
		}
	}
	if out := must(t, docker(t, "ps", "-aq", "--filter", "name=e2e-refused"), "docker ps"); strings.TrimSpace(out) != "" {
		t.Errorf("a refused run left a container: %s", out)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}
