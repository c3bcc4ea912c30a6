//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmarks share the machine with an e2e run that may go on at the same time: they install
// their own traffic-manager in benchManagerNamespace and name every connection "bench-...", so
// that neither run sees the other's sessions or quits its connections.
const benchManagerNamespace = "teledock-bench"

var benchInstall struct {
	once sync.Once
	r    cmdResult
}

// ensureBenchManager installs the benchmarks' traffic-manager once per run, with the direct
// transport (scenario 1 has a row for it). It stays installed afterwards, as the suite's does:
// install is idempotent and upgrades it to this run's image.
func ensureBenchManager(t testing.TB) {
	t.Helper()
	benchInstall.once.Do(func() {
		benchInstall.r = teledock(t, "install", "--kubeconfig", cfg.kubeconfig,
			"--manager-namespace", benchManagerNamespace, "--image", image("traffic-manager"), "--direct")
		if benchInstall.r.err == nil {
			profileManager(t)
		}
	})
	must(t, benchInstall.r, "teledock install --manager-namespace "+benchManagerNamespace)
}

// benchConnect connects name (a "bench-" name) through kubeconfig to ns with the given --transport,
// quits it when the test ends, and returns the wall time of `teledock connect`.
func benchConnect(t testing.TB, kubeconfig, ns, name, transport string) time.Duration {
	t.Helper()
	if !strings.HasPrefix(name, "bench-") {
		t.Fatalf("benchmark connection %q must be named bench-...", name)
	}
	// A connection left by an aborted run has other settings, and connect would refuse to reuse it.
	teledock(t, "quit", "--name", name)
	t.Cleanup(func() { teledock(t, "quit", "--name", name) })
	start := time.Now()
	must(t, teledock(t, "connect", "--kubeconfig", kubeconfig, "-n", ns, "--name", name,
		"--manager-namespace", benchManagerNamespace, "--image", image("daemon"), "--transport", transport), "teledock connect "+name)
	return time.Since(start)
}

// forward is a running `kubectl port-forward`.
type forward struct {
	port  string
	ready time.Duration // from starting kubectl to its "Forwarding from" line
	stop  func()        // ends kubectl; idempotent, and done anyway when the test ends
}

// benchPortForward starts `kubectl port-forward` with kubeconfig, listening on 127.0.0.1 and on
// the docker0 gateway, so that containers on Docker's default bridge reach it as
// host.docker.internal. It stops when the test ends.
func benchPortForward(t testing.TB, kubeconfig, ns, target string, remote int) forward {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, cfg.kubectl, "--kubeconfig", kubeconfig, "-n", ns, "port-forward",
		"--address", "127.0.0.1,"+dockerGateway(t), target, fmt.Sprintf(":%d", remote))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); _ = cmd.Wait() }) }
	t.Cleanup(stop)
	ports := make(chan string, 1)
	go func() {
		// With a random local port kubectl listens on the same port on every address.
		re := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
				break
			}
		}
		for sc.Scan() { // keep draining so kubectl never blocks on a full pipe
		}
	}()
	select {
	case p := <-ports:
		return forward{port: p, ready: time.Since(start), stop: stop}
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward %s printed no local port within 30s: %s", target, stderr.String())
		return forward{}
	}
}

// dockerGateway is the host's address on docker0, where host.docker.internal points.
func dockerGateway(t testing.TB) string {
	t.Helper()
	ifi, err := net.InterfaceByName("docker0")
	if err != nil {
		t.Fatalf("docker0: %v", err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatalf("docker0 addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatalf("docker0 has no IPv4 address: %v", addrs)
	return ""
}

// A prober runs e2e/images/probe somewhere and returns what it printed.
type prober func(t testing.TB, timeout time.Duration, args ...string) cmdResult

// hostProbe runs the probe binary that `make build` left in build/bin as a host process.
func hostProbe(t testing.TB, timeout time.Duration, args ...string) cmdResult {
	t.Helper()
	root := filepath.Dir(filepath.Dir(cfg.teledock)) // cfg.teledock is <worktree>/bin/teledock
	return run(t, timeout, filepath.Join(root, "build", "bin", "probe"), args...)
}

// dockerProbe runs the probe in a plain container with the given `docker run` network flags.
func dockerProbe(netFlags ...string) prober {
	return func(t testing.TB, timeout time.Duration, args ...string) cmdResult {
		t.Helper()
		argv := append([]string{"run", "--rm"}, netFlags...)
		argv = append(argv, "--entrypoint", "/probe", image("echo"))
		return run(t, timeout, "docker", append(argv, args...)...)
	}
}

// teledockProbe runs the probe in a `teledock run` container of the connection.
func teledockProbe(conn string) prober {
	return func(t testing.TB, timeout time.Duration, args ...string) cmdResult {
		t.Helper()
		argv := []string{"run", "--connection", conn, "--rm", "--entrypoint", "/probe", image("echo")}
		return run(t, timeout, cfg.teledock, append(argv, args...)...)
	}
}

// benchLoad is what one measurement moves: bytes each way and keep-alive GETs, with transfers
// cut off after transferTime so that a slow path cannot stretch the run.
type benchLoad struct {
	bytes        int64
	requests     int
	transferTime time.Duration
}

// window is the time span that starts at start (Unix nanoseconds) and lasts seconds.
func window(start int64, seconds float64) (time.Time, time.Time) {
	from := time.Unix(0, start)
	return from, from.Add(time.Duration(seconds * float64(time.Second)))
}

// figures is what `probe bench` prints (e2e/images/probe/bench.go).
type figures struct {
	DownStart   int64   `json:"down_start_ns"`
	DownBytes   int64   `json:"down_bytes"`
	DownSeconds float64 `json:"down_seconds"`
	UpStart     int64   `json:"up_start_ns"`
	UpBytes     int64   `json:"up_bytes"`
	UpSeconds   float64 `json:"up_seconds"`
	FirstMicros float64 `json:"first_us"`
	P50Micros   float64 `json:"p50_us"`
	P99Micros   float64 `json:"p99_us"`
	Requests    int     `json:"requests"`
}

func (f figures) downMBps() float64    { return float64(f.DownBytes) / f.DownSeconds / 1e6 }
func (f figures) upMBps() float64      { return float64(f.UpBytes) / f.UpSeconds / 1e6 }
func (f figures) first() time.Duration { return micros(f.FirstMicros) }
func (f figures) p50() time.Duration   { return micros(f.P50Micros) }
func (f figures) p99() time.Duration   { return micros(f.P99Micros) }

func micros(us float64) time.Duration { return time.Duration(us * float64(time.Microsecond)) }

// benchPath is one way of reaching the echo app: base is its URL as seen where probe runs.
type benchPath struct {
	name  string
	base  string
	probe prober
	conn  string // the teledock connection the row goes through, if any (for PROFILE=1)
}

// pathResult is a benchPath measured, with the CPU the machine spent during each transfer.
type pathResult struct {
	name           string
	fig            figures
	cpuDown, cpuUp cpuUsage
	err            error
}

// rounds is how many times each path is measured. The machine's two cores are shared, and a burst
// of other work can halve one measurement; rounds interleave the paths, so a burst hits one round
// of one path, and the best round is kept.
const rounds = 2

// measurePaths measures every path rounds times, interleaved, and keeps each path's best figures:
// the fastest download and upload (with the CPU of those transfers) and the round with the lowest
// p50 latency.
func measurePaths(t testing.TB, paths []benchPath, load benchLoad) []pathResult {
	t.Helper()
	best := make([]pathResult, len(paths))
	for round := range rounds {
		for i, p := range paths {
			wait := func() {}
			if round == 0 {
				wait = profileRow(t, p.name, p.conn)
			}
			r := measure(t, p, load)
			wait()
			if round == 0 || best[i].err != nil {
				best[i] = r
				continue
			}
			if r.err != nil {
				continue
			}
			b := &best[i]
			if r.fig.downMBps() > b.fig.downMBps() {
				b.fig.DownBytes, b.fig.DownSeconds, b.cpuDown = r.fig.DownBytes, r.fig.DownSeconds, r.cpuDown
			}
			if r.fig.upMBps() > b.fig.upMBps() {
				b.fig.UpBytes, b.fig.UpSeconds, b.cpuUp = r.fig.UpBytes, r.fig.UpSeconds, r.cpuUp
			}
			if r.fig.P50Micros < b.fig.P50Micros {
				b.fig.FirstMicros, b.fig.P50Micros, b.fig.P99Micros = r.fig.FirstMicros, r.fig.P50Micros, r.fig.P99Micros
			}
		}
	}
	return best
}

// measure runs `probe bench` on p with load and samples the machine's CPU meanwhile.
func measure(t testing.TB, p benchPath, load benchLoad) pathResult {
	t.Helper()
	args := []string{"-timeout", "4m", "-transfer-time", load.transferTime.String(),
		"bench", p.base, fmt.Sprint(load.bytes), fmt.Sprint(load.requests)}
	sampler := startCPUSampler()
	r := p.probe(t, 5*time.Minute, args...)
	samples := sampler.stop()
	res := pathResult{name: p.name}
	if r.err != nil {
		res.err = fmt.Errorf("%v: %s", r.err, strings.TrimSpace(r.stderr))
	} else if err := json.Unmarshal([]byte(r.stdout), &res.fig); err != nil {
		res.err = fmt.Errorf("probe printed %q: %v", r.stdout, err)
	} else {
		res.cpuDown = samples.between(window(res.fig.DownStart, res.fig.DownSeconds))
		res.cpuUp = samples.between(window(res.fig.UpStart, res.fig.UpSeconds))
	}
	f := res.fig
	t.Logf("%s: down %.1f MB/s, up %.1f MB/s, p50 %s, p99 %s (err %v)",
		p.name, f.downMBps(), f.upMBps(), f.p50(), f.p99(), res.err)
	return res
}
