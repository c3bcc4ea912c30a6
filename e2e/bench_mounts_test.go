//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// timedRead runs a command that writes a file to stdout and returns how long it took and how many
// bytes came.
func timedRead(t *testing.T, name string, args ...string) (time.Duration, int64) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, errb.String())
	}
	return time.Since(start), n
}

// TestBenchMounts: reading a 100 MiB file of an emptyDir through the intercept's volume (plugin
// mode: the pod's bytes over SFTP; copy mode: the local copy) against `kubectl exec cat` of the
// same file, and listing a folder of 1,000 files, in one run.
func TestBenchMounts(t *testing.T) {
	requireBench(t)
	ensureBenchManager(t)
	ns := newNamespace(t)
	apply(t, ns, "volumes.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/vols", "--timeout=120s"), "rollout of vols")
	pod := jsonpath(t, ns, "pods -l app=vols", "{.items[0].metadata.name}")
	inPod := func(args ...string) []string {
		return append([]string{"--kubeconfig", cfg.kubeconfig, "-n", ns, "exec", pod, "-c", "app", "--", "/probe", "-timeout", "5m"}, args...)
	}
	must(t, run(t, 5*time.Minute, cfg.kubectl, inPod("fill", "/cache/big", "100")...), "a 100 MiB file in the emptyDir")
	must(t, run(t, 5*time.Minute, cfg.kubectl, inPod("mkfiles", "/cache/many", "1000")...), "1,000 files in the emptyDir")
	conn := connect(t, ns)

	const runs = 3
	kubectlRead := &timingRow{name: "kubectl exec cat [ref]"}
	kubectlList := &timingRow{name: "kubectl exec ls [ref]"}
	for range runs {
		d, n := timedRead(t, cfg.kubectl, inPod("cat", "/cache/big")...)
		if n != 100<<20 {
			t.Fatalf("kubectl exec cat read %d bytes", n)
		}
		kubectlRead.add(d)
		d, _ = timedRead(t, cfg.kubectl, inPod("ls", "/cache/many")...)
		kubectlList.add(d)
	}
	var rows []*timingRow
	for _, mode := range []string{"plugin", "copy"} {
		start := time.Now()
		h := startHandler(t, conn, "bench-"+mode, "--mount-mode", mode)
		ready := time.Since(start)
		// Measured inside the handler, as its code would read: docker exec's own stream would be
		// the bottleneck otherwise.
		read := &timingRow{name: mode + " mount: read in the handler"}
		list := &timingRow{name: mode + " mount: list in the handler"}
		for range runs {
			n, d := probeTimed(t, h.exec("-timeout", "5m", "read", "/cache/big"))
			if n != 100<<20 {
				t.Fatalf("%s: read %d bytes", mode, n)
			}
			read.add(d)
			n, d = probeTimed(t, h.exec("ls", "/cache/many"))
			if n != 1000 {
				t.Fatalf("%s: listed %d files", mode, n)
			}
			list.add(d)
		}
		fmt.Printf("  %s mode: intercept to handler running (copy mode includes copying 100 MiB): %s\n", mode, seconds(ready))
		rows = append(rows, read, list)
		h.interrupt()
	}

	fmt.Printf("\nVolume mounts, median of %d (load average %s)\n", runs, loadAverage())
	fmt.Printf("  %-40s %10s %8s %10s\n", "100 MiB read", "time", "MB/s", "x kubectl")
	mb := float64(100<<20) / 1e6
	for _, r := range []*timingRow{kubectlRead, rows[0], rows[2]} {
		m := r.median()
		fmt.Printf("  %-40s %10s %8.0f %10.2f\n", r.name, seconds(m), mb/m.Seconds(), kubectlRead.median().Seconds()/m.Seconds())
	}
	fmt.Printf("  %-40s %10s %8s %10s\n", "list 1,000 files", "time", "", "x kubectl")
	for _, r := range []*timingRow{kubectlList, rows[1], rows[3]} {
		m := r.median()
		fmt.Printf("  %-40s %10s %8s %10.2f\n", r.name, seconds(m), "", kubectlList.median().Seconds()/m.Seconds())
	}
	fmt.Println("  x kubectl > 1 is faster than kubectl exec. kubectl rows: the whole kubectl exec (the way to get the")
	fmt.Println("  file without teledock); mount rows: the read or listing inside the handler container.")
}

// probeTimed parses what `probe read` and `probe ls` print: a count and a duration.
func probeTimed(t *testing.T, r cmdResult) (int64, time.Duration) {
	t.Helper()
	out := must(t, r, "probe")
	var n int64
	var ds string
	if _, err := fmt.Sscan(out, &n, &ds); err != nil {
		t.Fatalf("probe said %q: %v", out, err)
	}
	d, err := time.ParseDuration(ds)
	if err != nil {
		t.Fatalf("probe said %q: %v", out, err)
	}
	return n, d
}
