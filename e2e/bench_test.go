//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// Benchmarks run only from `make bench` (TELEDOCK_BENCH=1): they measure, they do not assert, and
// they print each path's figures beside the direct path measured in the same run.

func requireBench(t *testing.T) {
	t.Helper()
	if os.Getenv("TELEDOCK_BENCH") == "" {
		t.Skip("benchmark: run with `make bench`")
	}
}

// pathResult is one way of reaching the echo app, measured.
type pathResult struct {
	name          string
	mbps          float64 // download throughput, MB/s
	p50, p99      time.Duration
	requests      int
	bytes         int64
	transferError error
}

// measure downloads n bytes from base and times keep-alive GETs of / (latency).
func measure(name, base string, n int64, requests int) pathResult {
	r := pathResult{name: name, requests: requests, bytes: n}
	client := &http.Client{Timeout: 2 * time.Minute}
	start := time.Now()
	resp, err := client.Get(fmt.Sprintf("%s/bytes?n=%d", base, n))
	if err != nil {
		r.transferError = err
		return r
	}
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || got != n {
		r.transferError = fmt.Errorf("got %d of %d bytes: %v", got, n, err)
		return r
	}
	r.mbps = float64(n) / time.Since(start).Seconds() / 1e6

	lat := make([]time.Duration, 0, requests)
	for i := 0; i < requests; i++ {
		t0 := time.Now()
		resp, err := client.Get(base + "/")
		if err != nil {
			r.transferError = err
			return r
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[len(lat)*99/100]
	return r
}

func printTable(t *testing.T, results []pathResult) {
	t.Helper()
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "path\tdownload MB/s\tvs direct\tp50\tp99\tp50 added vs direct")
	direct := results[0]
	for _, r := range results {
		if r.transferError != nil {
			fmt.Fprintf(w, "%s\tfailed: %v\t\t\t\t\n", r.name, r.transferError)
			continue
		}
		fmt.Fprintf(w, "%s\t%.1f\t%.2fx\t%s\t%s\t%s\n", r.name, r.mbps, r.mbps/direct.mbps,
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), (r.p50 - direct.p50).Round(time.Microsecond))
	}
	w.Flush()
	fmt.Println(b.String())
}

func TestBenchPaths(t *testing.T) {
	requireBench(t)
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	podIP := jsonpath(t, ns, "pods", "{.items[0].status.podIP}")
	pf := portForward(t, ns, "service/echo", 80)

	const n = 512 << 20
	results := []pathResult{
		measure("direct host -> pod (the limit)", "http://"+podIP+":8080", n, 500),
		measure("kubectl port-forward", "http://127.0.0.1:"+pf, n, 500),
	}
	printTable(t, results)
}
