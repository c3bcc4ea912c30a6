//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBenchIntercept: how long `teledock intercept` takes the first time (agent injection and the
// rollout included) and again once the agent is there, and how long `leave` takes. Targets: first
// intercept < 10 s, re-intercept < 1 s.
func TestBenchIntercept(t *testing.T) {
	requireBench(t)
	ensureBenchManager(t)
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	const name = "bench-intercept"
	benchConnect(t, cfg.kubeconfig, ns, name, "port-forward")
	handler := "bench-intercept-handler"
	docker(t, "rm", "-f", handler)
	must(t, teledock(t, "run", "--connection", name, "-d", "--name", handler, "-e", "ECHO_TEXT=local", image("echo")), "start the handler")
	t.Cleanup(func() { docker(t, "rm", "-f", handler) })

	timed := func(args ...string) time.Duration {
		start := time.Now()
		must(t, teledock(t, append(args, "--name", name)...), strings.Join(args, " "))
		return time.Since(start)
	}
	first := timed("intercept", "echo", "--port", "8080:http")
	leaves := &timingRow{name: "teledock leave (wall)"}
	again := &timingRow{name: "re-intercept, agent present (wall)"}
	leaves.add(timed("leave", "echo"))
	for range 3 {
		again.add(timed("intercept", "echo", "--port", "8080:http"))
		leaves.add(timed("leave", "echo"))
	}

	fmt.Printf("\nIntercept timings (load average %s)\n", loadAverage())
	fmt.Printf("  %-45s %10s\n", "first intercept (agent injection + rollout)", seconds(first))
	fmt.Printf("  %-45s %10s   runs %v\n", again.name+" median", seconds(again.median()), again.runs)
	fmt.Printf("  %-45s %10s   runs %v\n", leaves.name+" median", seconds(leaves.median()), leaves.runs)

	// Memory under load: the intercept again, 200 connections at once from a pod to the handler.
	timed("intercept", "echo", "--port", "8080:http")
	const n = 200
	out, mem := intercepted(t, ns, name, n)
	fmt.Printf("\nPeak resident memory (VmHWM), %d intercepted connections at once (%s)\n", n, out)
	fmt.Printf("  %-45s %10s   (%s of it the binary's file pages)\n", "traffic-agent", mib(mem.agent), mib(mem.agentFile))
	fmt.Printf("  %-45s %10s\n", "daemon", mib(mem.daemon))
	printTargets([]target{
		atMost("first intercept s", first.Seconds(), 10, "s"),
		atMost("re-intercept s", again.median().Seconds(), 1, "s"),
		atMost("traffic-agent peak RSS under load < 20 MiB", float64(mem.agent)/(1<<20), 20, "MiB"),
	})
}
