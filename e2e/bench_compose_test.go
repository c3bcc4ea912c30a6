//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBenchCompose: the time from `teledock compose up -d` to the first request made inside the
// cluster that the local compose service answers, the first time (agent injection and rollout) and
// again; beside it, plain `docker compose up -d` of the same project to its first local answer,
// measured in the same run.
func TestBenchCompose(t *testing.T) {
	requireBench(t)
	ensureBenchManager(t)
	ns := newNamespace(t)
	apply(t, ns, "compose.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/web-app", "--timeout=120s"), "rollout of web-app")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	p := newComposeProject(t, ns, "bench-compose-"+ns[len(ns)-6:])

	firstAnswer := func(f func() cmdResult, prefix string) {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if r := f(); r.err == nil && strings.HasPrefix(r.stdout, prefix) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer %q within 2m", prefix)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	plain := &timingRow{name: "docker compose up -d -> local answer [ref]"}
	td := &timingRow{name: "teledock compose up -d -> cluster's request answered locally"}
	var first time.Duration
	for i := range 4 {
		start := time.Now()
		must(t, p.compose("up", "-d"), "docker compose up -d")
		firstAnswer(func() cmdResult { return p.probe(nil, "plain", "http", "http://web:8080/") }, "answered by compose web")
		if i > 0 {
			plain.add(time.Since(start))
		}
		must(t, p.compose("down", "--timeout", "1"), "docker compose down")

		start = time.Now()
		must(t, p.teledock("up", "-d"), "teledock compose up -d")
		firstAnswer(func() cmdResult { return fromCluster(t, ns, "http", "http://web-app/") }, "answered by compose web")
		if i == 0 {
			first = time.Since(start)
		} else {
			td.add(time.Since(start))
		}
		must(t, p.teledock("down", "--timeout", "1"), "teledock compose down")
	}
	fmt.Printf("\nCompose timings (load average %s)\n", loadAverage())
	fmt.Printf("  %-62s %10s\n", "teledock compose up, first time (agent injection + rollout)", seconds(first))
	for _, r := range []*timingRow{td, plain} {
		fmt.Printf("  %-62s %10s   runs %v\n", r.name+" median", seconds(r.median()), r.runs)
	}
	fmt.Printf("  %-62s %10.2f\n", "x plain docker compose up", td.median().Seconds()/plain.median().Seconds())
	printTargets([]target{atMost("teledock compose up to first intercepted answer, agent present, s", td.median().Seconds(), 10, "s")})
}
