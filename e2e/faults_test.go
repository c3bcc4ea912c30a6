//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonKilledMidIntercept: the developer's side dies without a word (`docker kill` of the
// daemon container) while an intercept takes the cluster's traffic.
//   - Reconnecting at once works: the new session replaces the dead one at the manager, so the
//     same intercept is made again right away instead of "already intercepted" until the dead
//     session's lease runs out.
//   - Not reconnecting: the cluster's traffic is back at the app within 15 s, and then no request
//     fails.
func TestDaemonKilledMidIntercept(t *testing.T) {
	app, clusterIP, conn := echoConnection(t)
	ns := app.Namespace
	intercept := func() { interceptWithHandler(t, conn, clusterIP) }
	kill := func() time.Time {
		t.Helper()
		must(t, docker(t, "kill", "teledock-daemon-"+conn), "kill the daemon container")
		return time.Now()
	}

	intercept()
	killed := kill()
	// At once, well inside the dead session's 10 s lease.
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", managerNamespace, "--image", image("daemon")), "connect again after the kill")
	intercept()
	t.Logf("reconnected and intercepting again %.1fs after the kill", time.Since(killed).Seconds())

	killed = kill()
	backAtTheApp(t, app, clusterIP, killed, "daemon container killed")
}

// steadyRequests is how many requests backAtTheApp makes once the app answers again.
const steadyRequests = 20

// backAtTheApp checks what a client's death must lead to: the Service at clusterIP is answered by
// the app again within 15 s of the fault (at since), and then none of steadyRequests requests fails.
func backAtTheApp(t *testing.T, app echoApp, clusterIP string, since time.Time, fault string) {
	t.Helper()
	var back time.Duration
	failed := 0
	// Requests with a short timeout, so that one that hangs on the dead intercept does not hide
	// for long when the traffic came back.
	quick := freshClient(time.Second)
	eventually(t, 60*time.Second, "the cluster's traffic back at the app", func() error {
		r := getWith(quick, "http://"+clusterIP+"/")
		if r.err != nil || !strings.HasPrefix(r.stdout, app.Text+" from echo-") {
			return fmt.Errorf("GET %s = %q %v", clusterIP, r.stdout, r.err)
		}
		back = time.Since(since)
		return nil
	})
	for range steadyRequests {
		if r := httpGet("http://" + clusterIP + "/"); r.err != nil || !strings.HasPrefix(r.stdout, app.Text+" from echo-") {
			failed++
			t.Logf("after recovery: %q %v", r.stdout, r.err)
		}
		time.Sleep(250 * time.Millisecond) // the request rate of the check, not a wait for readiness
	}
	t.Logf("%s: the app answered again %.1fs later; %d of %d requests failed after that", fault, back.Seconds(), failed, steadyRequests)
	if back > 15*time.Second {
		t.Errorf("the app answered again %.1fs after the fault, want within 15s", back.Seconds())
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed after the traffic came back", failed, steadyRequests)
	}
}

func getWith(c *http.Client, url string) cmdResult {
	resp, err := c.Get(url)
	if err != nil {
		return cmdResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return cmdResult{stdout: string(b), err: err}
}

// TestManagerRestartKeepsIntercepts: the traffic-manager's pod is deleted under a connected client
// with an intercept. Without a new connect, the daemon's session and intercept come back at the
// new pod and the cluster's traffic reaches the handler again; meanwhile the intercepted
// workload's requests go to the app (the agent forwards there when it has no intercept) or fail,
// but none hangs past the client's timeout. The test logs what it saw.
func TestManagerRestartKeepsIntercepts(t *testing.T) {
	app, clusterIP, conn := echoConnection(t)
	interceptWithHandler(t, conn, clusterIP)
	quick := freshClient(2 * time.Second)

	old := jsonpath(t, managerNamespace, "pods -l app.kubernetes.io/name=traffic-manager", "{.items[0].metadata.name}")
	deleted := time.Now()
	must(t, kubectl(t, "-n", managerNamespace, "delete", "pod", old, "--wait=false"), "delete the manager pod")
	// The old pod serves until it has stopped; the intercept counts as back once a request after
	// that reaches the handler.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		kubectl(t, "-n", managerNamespace, "wait", "--for=delete", "pod/"+old, "--timeout=90s")
	}()
	var byApp, failed, total int
	var back time.Duration
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		stopped := isClosed(gone)
		r := getWith(quick, "http://"+clusterIP+"/")
		total++
		switch {
		case r.err == nil && strings.HasPrefix(r.stdout, "local from "):
			if stopped {
				back = time.Since(deleted)
			}
		case r.err == nil && strings.HasPrefix(r.stdout, app.Text+" from echo-"):
			byApp++
		default:
			failed++
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a request took %s while the manager was away", took)
		}
		if back > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond) // the request rate of the check
	}
	t.Logf("manager pod deleted: the handler answered again after %.1fs; meanwhile %d of %d requests went to the app and %d failed",
		back.Seconds(), byApp, total, failed)
	if back == 0 {
		r := docker(t, "logs", "--tail", "60", "teledock-daemon-"+conn)
		t.Logf("daemon log:\n%s%s", r.stdout, r.stderr)
		r = kubectl(t, "-n", managerNamespace, "logs", "deployment/traffic-manager", "--tail", "60")
		t.Logf("manager log:\n%s%s", r.stdout, r.stderr)
		r = kubectl(t, "-n", app.Namespace, "logs", "deployment/echo", "-c", "traffic-agent", "--tail", "40")
		t.Logf("agent log:\n%s%s", r.stdout, r.stderr)
		t.Fatal("the intercept did not come back within 90s of the manager's restart")
	}
	// Measured 2.9-4.5 s on the built-in cluster; the goal is 10 s.
	if back > 10*time.Second {
		t.Errorf("the intercept came back %.1fs after the manager's pod was deleted, want within 10s", back.Seconds())
	}
	if s := status(t, conn); !s.TrafficManager.Connected {
		t.Errorf("status after the restart: %+v", s)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// freshClient makes every request on a new connection: a kept-alive one stays with whoever
// accepted it (the app, or a handler), which is not what a test of where new traffic goes asks.
func freshClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

// interceptWithHandler intercepts the echo workload of conn's namespace at port 8080 and starts a
// handler container there that answers "local from ..."; it returns once a request made to the
// Service (at clusterIP) gets the handler's answer. The handler goes when the test ends.
func interceptWithHandler(t *testing.T, conn, clusterIP string) {
	t.Helper()
	handler := conn + "-handler"
	t.Cleanup(func() { docker(t, "rm", "-f", handler) })
	must(t, teledock(t, "intercept", "echo", "--port", "8080", "--name", conn), "intercept echo")
	docker(t, "rm", "-f", handler) // one that died with an earlier daemon
	must(t, teledock(t, "run", "--connection", conn, "-d", "--name", handler, "-e", "ECHO_TEXT=local", image("echo")), "start the handler")
	eventually(t, 60*time.Second, "the cluster's request answered by the handler", func() error {
		if r := getWith(freshClient(5*time.Second), "http://"+clusterIP+"/"); r.err != nil || !strings.HasPrefix(r.stdout, "local from ") {
			return fmt.Errorf("GET %s = %q %v", clusterIP, r.stdout, r.err)
		}
		return nil
	})
}

// TestAPIServerOutage: the API server (and with it the port-forward that carries the session) is
// unreachable from the daemon for 20 s. The daemon says so in status and stays up; once the API
// server answers again the session comes back by itself, with its intercept.
func TestAPIServerOutage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("blocking the API server from the daemon's address takes root (iptables) on the cluster's host")
	}
	_, clusterIP, conn := echoConnection(t)
	interceptWithHandler(t, conn, clusterIP)

	ip := strings.TrimSpace(must(t, docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "teledock-daemon-"+conn), "the daemon's address"))
	ip = strings.Fields(ip)[0]
	rule := []string{"INPUT", "-s", ip, "-p", "tcp", "--dport", apiServerPort(t), "-j", "DROP"}
	must(t, run(t, 10*time.Second, "iptables", append([]string{"-I"}, rule...)...), "block the API server")
	unblocked := false
	unblock := func() {
		if !unblocked {
			unblocked = true
			run(t, 10*time.Second, "iptables", append([]string{"-D"}, rule...)...)
		}
	}
	t.Cleanup(unblock)
	blocked := time.Now()

	var seen string
	eventually(t, 30*time.Second, "status reports the lost API server", func() error {
		s := status(t, conn)
		if !s.Daemon.Running {
			return fmt.Errorf("the daemon stopped: %+v", s)
		}
		if seen = s.Daemon.Status; seen == "connected" && s.TrafficManager.Connected {
			return fmt.Errorf("still says connected")
		}
		return nil
	})
	t.Logf("%.1fs into the outage status says %q", time.Since(blocked).Seconds(), seen)
	for time.Since(blocked) < 20*time.Second {
		if s := status(t, conn); !s.Daemon.Running {
			t.Fatalf("the daemon stopped during the outage: %+v", s)
		}
		time.Sleep(time.Second) // the outage lasts 20 s; this only samples it
	}
	unblock()
	restored := time.Now()
	session, intercept := sessionAndInterceptBack(t, conn, clusterIP, restored)
	t.Logf("20 s outage: session back %.1fs and the intercept %.1fs after the API server answered again",
		session.Seconds(), intercept.Seconds())
}

// apiServerPort is the port of the API server in the suite's kubeconfig.
func apiServerPort(t *testing.T) string {
	t.Helper()
	server := must(t, kubectl(t, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"), "the API server's URL")
	i := strings.LastIndex(server, ":")
	if i < 0 {
		t.Fatalf("no port in %q", server)
	}
	return strings.TrimSpace(server[i+1:])
}

// echoConnection deploys the echo app in a new namespace and connects to that namespace; it
// returns the app, its Service's ClusterIP and the connection's name.
func echoConnection(t *testing.T) (app echoApp, clusterIP, conn string) {
	t.Helper()
	ensureManager(t)
	ns := newNamespace(t)
	app = deployEcho(t, ns, "echo")
	clusterIP = jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")
	return app, clusterIP, connect(t, ns)
}

// TestInterceptCLIKilled: `teledock intercept --docker-run` is killed with SIGKILL while the
// cluster's requests reach its handler. The daemon removes the intercept (the CLI held it), docker
// stops the handler (SIGTERM when its parent died): the cluster's traffic is back at the app within
// 15 s, no request fails after that, `list` has no intercept, no container is left, and the same
// intercept can be made again at once.
func TestInterceptCLIKilled(t *testing.T) {
	app, clusterIP, conn := echoConnection(t)
	handler := conn + "-h"
	start := func() *exec.Cmd {
		cmd, out := dockerRunIntercept(t, conn, "echo", handler)
		eventually(t, 90*time.Second, "the cluster's request answered by the handler", func() error {
			if r := getWith(freshClient(5*time.Second), "http://"+clusterIP+"/"); r.err != nil || !strings.HasPrefix(r.stdout, "local from ") {
				return fmt.Errorf("GET %s = %q %v\n%s", clusterIP, r.stdout, r.err, out.String())
			}
			return nil
		})
		return cmd
	}

	cmd := start()
	must(t, run(t, 10*time.Second, "kill", "-KILL", fmt.Sprint(cmd.Process.Pid)), "kill -9 the intercepting teledock")
	backAtTheApp(t, app, clusterIP, time.Now(), "intercept --docker-run killed")
	if list := must(t, teledock(t, "list", "--name", conn, "-o", "json"), "list"); strings.Contains(list, `"intercepts"`) {
		t.Errorf("list still has an intercept after its CLI was killed:\n%s", list)
	}
	eventually(t, 30*time.Second, "the handler container gone", func() error {
		if r := docker(t, "inspect", "-f", "{{.State.Status}}", handler); r.err == nil {
			return fmt.Errorf("container %s is %s", handler, strings.TrimSpace(r.stdout))
		}
		return nil
	})

	again := time.Now()
	cmd = start()
	t.Logf("the same intercept made again in %.1fs", time.Since(again).Seconds())
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Logf("intercept --docker-run after Ctrl-C: %v", err)
	}
}

// dockerRunIntercept starts `teledock intercept WORKLOAD --port 8080 --docker-run` in the
// background with an echo handler named handler that answers "local from ..."; the process and
// the container go when the test ends.
func dockerRunIntercept(t *testing.T, conn, workload, handler string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(cfg.teledock, "intercept", workload, "--port", "8080", "--name", conn,
		"--docker-run", "--", "--name", handler, "-e", "ECHO_TEXT=local", image("echo"))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); docker(t, "rm", "-f", handler) })
	return cmd, out
}

// sessionAndInterceptBack waits, after a fault ended at since, for conn's session to be connected
// again and then for the Service at clusterIP to be answered by the handler; it returns how long
// after since each took.
func sessionAndInterceptBack(t *testing.T, conn, clusterIP string, since time.Time) (session, intercept time.Duration) {
	t.Helper()
	eventually(t, 90*time.Second, "the session back", func() error {
		if s := status(t, conn); s.Daemon.Status != "connected" || !s.TrafficManager.Connected {
			return fmt.Errorf("status %q, connected %v", s.Daemon.Status, s.TrafficManager.Connected)
		}
		return nil
	})
	session = time.Since(since)
	eventually(t, 90*time.Second, "the intercept back", func() error {
		if r := getWith(freshClient(2*time.Second), "http://"+clusterIP+"/"); r.err != nil || !strings.HasPrefix(r.stdout, "local from ") {
			return fmt.Errorf("GET %s = %q %v", clusterIP, r.stdout, r.err)
		}
		return nil
	})
	return session, time.Since(since)
}

// stopProcess sends SIGTERM to a host process (dockerd, the kubelet) and waits until it is gone.
func stopProcess(t *testing.T, pid, what string) time.Time {
	t.Helper()
	must(t, run(t, 10*time.Second, "kill", "-TERM", pid), "stop "+what)
	stopped := time.Now()
	eventually(t, 90*time.Second, what+" gone", func() error {
		if _, err := os.Stat("/proc/" + pid); err == nil {
			return fmt.Errorf("%s (%s) still runs", what, pid)
		}
		return nil
	})
	return stopped
}
