//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBenchHTTPFilter: what a personal intercept costs the requests it does not take. Keep-alive
// GETs from a pod to a Service, p50 and p99 over 1000 requests (best of 3 rounds): with no agent,
// with the agent but no intercept (the agent joins whole connections), with a filtered intercept
// whose header the requests lack (the agent parses each request and sends it to the app), and
// with the header (the request goes to the developer's handler). All rows in one run; the ratio is
// to the unintercepted row with the agent.
func TestBenchHTTPFilter(t *testing.T) {
	requireBench(t)
	ensureBenchManager(t)
	ns := newNamespace(t)
	apply(t, ns, "httpfilter.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/filtered", "--timeout=120s"), "rollout of filtered")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	const name = "bench-filter"
	benchConnect(t, cfg.kubeconfig, ns, name, "auto")
	handler := "bench-filter-handler"
	docker(t, "rm", "-f", handler)
	must(t, teledock(t, "run", "--connection", name, "-d", "--name", handler, "-e", "ECHO_TEXT=local", image("echo")), "start the handler")
	t.Cleanup(func() { docker(t, "rm", "-f", handler) })

	type row struct {
		name     string
		p50, p99 float64 // µs
	}
	measure := func(rowName string, header string) row {
		args := []string{"-n", ns, "exec", "client", "--", "/probe", "-timeout", "120s"}
		if header != "" {
			args = append(args, "-header", header)
		}
		r := row{name: rowName}
		for range 3 {
			out := must(t, kubectl(t, append(args, "bench", "http://filtered", "0", "1000")...), rowName)
			var res struct {
				P50 float64 `json:"p50_us"`
				P99 float64 `json:"p99_us"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("%s: %v: %s", rowName, err, out)
			}
			if r.p50 == 0 || res.P50 < r.p50 {
				r.p50, r.p99 = res.P50, res.P99
			}
		}
		return r
	}
	// The handler answers "local"; the app "cluster filtered": make sure each row goes where it says.
	answeredBy := func(header, want string) {
		args := []string{"http-seq", "http://filtered", "/"}
		if header != "" {
			args[2] = "/;" + header
		}
		eventually(t, 90*time.Second, "requests with "+header+" answered by "+want, func() error {
			r := fromCluster(t, ns, args...)
			if r.err != nil || !strings.HasPrefix(r.stdout, want) {
				return fmt.Errorf("%v: %s %s", r.err, r.stdout, r.stderr)
			}
			return nil
		})
	}

	rows := []row{measure("no agent", "")}
	must(t, teledock(t, "intercept", "filtered", "--port", "8080:http", "--http-header", "x-dev=bench", "--name", name), "filtered intercept")
	answeredBy("x-dev=bench", "local")
	answeredBy("", "cluster filtered")
	unmatched := measure("filtered intercept, request without the header (app answers)", "")
	matched := measure("filtered intercept, request with the header (handler answers)", "x-dev: bench")
	must(t, teledock(t, "leave", "filtered", "--name", name), "leave")
	answeredBy("x-dev=bench", "cluster filtered")
	agent := measure("agent, no intercept [ref]", "")
	rows = append(rows, agent, unmatched, matched)

	fmt.Printf("\nHTTP filters: keep-alive GETs from a pod to a Service, 1000 per round, best of 3 (load average %s)\n", loadAverage())
	fmt.Printf("  %-66s %9s %9s %9s %11s\n", "path", "p50", "p99", "x ref", "p50 +ref")
	for _, r := range rows {
		fmt.Printf("  %-66s %8.2fms %8.2fms %8.2fx %+10.2fms\n", r.name, r.p50/1000, r.p99/1000, r.p50/agent.p50, (r.p50-agent.p50)/1000)
	}
	printTargets([]target{
		atMost("filtered intercept, unmatched request: added p50 vs no intercept ms", (unmatched.p50-agent.p50)/1000, 0.5, "ms"),
	})
}
