//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestThousandConnections: a container of the connection opens 1,000 TCP connections to a
// cluster Service at once and makes a request on each: none fails, and afterwards the daemon's
// goroutines come back to what they were before (no flow leaks). The daemon's memory is logged.
func TestThousandConnections(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	// The profiler (loopback of the daemon's network namespace) tells the goroutines.
	r := runEnv(t, 3*time.Minute, []string{"TELEDOCK_PPROF=" + pprofAddr}, cfg.teledock, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", managerNamespace, "--image", image("daemon"))
	must(t, r, "connect with the profiler")
	must(t, inCluster(t, conn, "http", "http://echo/"), "a first request")

	base := daemonGoroutines(t, conn)
	baseMem := daemonMemory(t, conn)
	const n = 1000
	start := time.Now()
	out := must(t, inCluster(t, conn, "load", "http://echo/", strconv.Itoa(n)), "1000 connections at once")
	if !strings.HasPrefix(out, fmt.Sprintf("%d ok, 0 failed", n)) {
		t.Errorf("load: %q", out)
	}
	took := time.Since(start)
	peakMem := daemonMemory(t, conn)
	var after int
	eventually(t, 90*time.Second, "the daemon's goroutines back to their baseline", func() error {
		after = daemonGoroutines(t, conn)
		if after > base+20 {
			return fmt.Errorf("%d goroutines, %d before the load", after, base)
		}
		return nil
	})
	t.Logf("%d connections at once: %s; daemon goroutines %d before, %d after; daemon memory %s before, %s after the load, %s now",
		n, took.Round(time.Millisecond), base, after, baseMem, peakMem, daemonMemory(t, conn))
	if peak := peakRSS(t, containerPID(t, "teledock-daemon-"+conn)); peak > daemonMemoryBound {
		t.Errorf("the daemon's peak resident memory is %s, want under %s", mib(peak), mib(daemonMemoryBound))
	} else {
		t.Logf("the daemon's peak resident memory: %s", mib(peak))
	}
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// daemonGoroutines reads the daemon's goroutine count from its profiler.
func daemonGoroutines(t *testing.T, conn string) int {
	t.Helper()
	r := run(t, time.Minute, "docker", "run", "--rm", "--network", "container:teledock-daemon-"+conn, "--entrypoint", "/probe", image("echo"),
		"-timeout", "20s", "http", "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1")
	m := goroutineTotal.FindStringSubmatch(must(t, r, "the daemon's goroutines"))
	if m == nil {
		t.Fatalf("no goroutine total in the profile: %.200q", r.stdout)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// daemonMemory is what `docker stats` says the daemon container uses.
func daemonMemory(t *testing.T, conn string) string {
	t.Helper()
	r := docker(t, "stats", "--no-stream", "--format", "{{.MemUsage}}", "teledock-daemon-"+conn)
	return strings.TrimSpace(strings.SplitN(must(t, r, "docker stats"), "/", 2)[0])
}

// TestInterceptedLoad: a pod in the cluster opens 200 connections at once to an intercepted
// Service; every one reaches the one local handler and is answered by it (the probe checks each
// answer).
func TestInterceptedLoad(t *testing.T) {
	app, clusterIP, conn := echoConnection(t)
	ns := app.Namespace
	interceptWithHandler(t, conn, clusterIP)

	const n = 200
	out, mem := intercepted(t, ns, conn, n)
	t.Logf("%d intercepted connections at once: %s", n, out)
	if !strings.HasPrefix(out, fmt.Sprintf("%d ok, 0 failed", n)) {
		t.Errorf("load through the intercept: %q", out)
	}
	t.Logf("peak resident memory: traffic-agent %s (now %s of it the binary's file pages), daemon %s",
		mib(mem.agent), mib(mem.agentFile), mib(mem.daemon))
	if mem.agent > agentMemoryBound {
		t.Errorf("the traffic-agent's peak resident memory is %s, want under %s", mib(mem.agent), mib(agentMemoryBound))
	}
	if mem.daemon > daemonMemoryBound {
		t.Errorf("the daemon's peak resident memory is %s, want under %s", mib(mem.daemon), mib(daemonMemoryBound))
	}
}

type loadMemory struct{ agent, agentFile, daemon int64 }

// intercepted runs a pod in ns that opens n connections at once to the intercepted Service echo,
// each answered by conn's handler ("local from ..."); it returns the probe's summary and the peak
// resident memory of the echo pod's traffic-agent and of the daemon.
func intercepted(t testing.TB, ns, conn string, n int) (string, loadMemory) {
	t.Helper()
	kubectl(t, "-n", ns, "delete", "pod", "load", "--ignore-not-found", "--wait")
	must(t, kubectl(t, "-n", ns, "run", "load", "--image", image("echo"), "--image-pull-policy", "Never", "--restart", "Never",
		"--command", "--", "/probe", "-timeout", "120s", "load", "http://echo/", strconv.Itoa(n), "local from "), "start the load pod")
	eventually(t, 3*time.Minute, "the load pod to finish", func() error {
		phase := jsonpath(t, ns, "pod/load", "{.status.phase}")
		if phase != "Succeeded" && phase != "Failed" {
			return fmt.Errorf("phase %q", phase)
		}
		return nil
	})
	out := strings.TrimSpace(must(t, kubectl(t, "-n", ns, "logs", "pod/load"), "the load pod's output"))
	pod := strings.Fields(jsonpath(t, ns, "pods -l app=echo", "{.items[*].metadata.name}"))
	if len(pod) != 1 {
		t.Fatalf("pods of echo: %v", pod)
	}
	agent := podProcess(t, ns, pod[0], "traffic-agent")
	return out, loadMemory{
		agent:     peakRSS(t, agent),
		agentFile: procStatus(t, agent, "RssFile"),
		daemon:    peakRSS(t, containerPID(t, "teledock-daemon-"+conn)),
	}
}

// The resident memory bounds that docs/architecture.md states, as measured with room: the agent
// peaks at 20-21.5 MiB under 200 connections (about 12.5 MiB of it the pages of its binary, shared
// with the page cache; the goal of 20 MiB is not met yet); the daemon at about 90 MiB under 1000.
const (
	agentMemoryBound  = 24 << 20
	daemonMemoryBound = 160 << 20
)
