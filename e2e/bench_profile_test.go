//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// `make bench PROFILE=1` sets TELEDOCK_BENCH_PROFILE to a folder and TELEDOCK_PPROF for the
// daemons; each teledock row then leaves CPU profiles of the daemon and of the traffic-manager,
// taken while its first round runs: FOLDER/<row>.daemon.pprof and .manager.pprof (`go tool pprof`).
var profileDir = os.Getenv("TELEDOCK_BENCH_PROFILE")

// pprofAddr is where TELEDOCK_PPROF puts the profiler, in the daemon's and the manager's pods'
// network namespaces (loopback only).
const pprofAddr = "127.0.0.1:6060"

// profileSeconds covers a row's download and upload at the speeds seen on this machine.
const profileSeconds = 6

var benchManagerProfile struct {
	once sync.Once
	port string
}

// profileRow takes CPU profiles of conn's daemon and of the bench manager while a row runs and
// returns a wait for them; it does nothing unless PROFILE=1.
func profileRow(t testing.TB, row, conn string) (wait func()) {
	t.Helper()
	if profileDir == "" || conn == "" {
		return func() {}
	}
	if err := os.MkdirAll(profileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	benchManagerProfile.once.Do(func() {
		benchManagerProfile.port = benchPortForward(t, cfg.kubeconfig, benchManagerNamespace, "deployment/traffic-manager", 6060).port
	})
	url := fmt.Sprintf("/debug/pprof/profile?seconds=%d", profileSeconds)
	timeout := fmt.Sprintf("%ds", profileSeconds+30)
	base := filepath.Join(profileDir, nonDNS.ReplaceAllString(row, "_"))
	var wg sync.WaitGroup
	fetch := func(file string, probe prober, args ...string) {
		defer wg.Done()
		r := probe(t, time.Minute, args...)
		if r.err != nil {
			t.Logf("profile %s: %v: %s", file, r.err, r.stderr)
			return
		}
		if err := os.WriteFile(file, []byte(r.stdout), 0o644); err != nil {
			t.Logf("profile %s: %v", file, err)
		}
	}
	wg.Add(2)
	go fetch(base+".daemon.pprof", dockerProbe("--network", "container:teledock-daemon-"+conn),
		"-timeout", timeout, "http", "http://"+pprofAddr+url)
	go fetch(base+".manager.pprof", hostProbe, "-timeout", timeout, "http", "http://127.0.0.1:"+benchManagerProfile.port+url)
	return wg.Wait
}

// profileManager turns on the bench manager's profiler (PROFILE=1 only). It restarts the manager,
// so ensureBenchManager calls it before any connection or port-forward to it exists.
func profileManager(t testing.TB) {
	t.Helper()
	if profileDir == "" {
		return
	}
	must(t, kubectl(t, "-n", benchManagerNamespace, "set", "env", "deployment/traffic-manager", "TELEDOCK_PPROF="+pprofAddr), "set TELEDOCK_PPROF")
	must(t, kubectl(t, "-n", benchManagerNamespace, "rollout", "status", "deployment/traffic-manager", "--timeout=120s"), "manager rollout")
}
