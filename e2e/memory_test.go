//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// peakRSS is a process's peak resident memory (VmHWM) in bytes, from /proc: the most it ever used,
// so a check after a load covers the load itself.
func peakRSS(t testing.TB, pid int) int64 { return procStatus(t, pid, "VmHWM") }

// procStatus is a memory field of /proc/PID/status ("VmHWM", "RssFile", ...) in bytes.
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("memory of pid %d: %v", pid, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s of pid %d: %q", field, pid, rest)
			}
			return kib << 10
		}
	}
	t.Fatalf("pid %d has no %s", pid, field)
	return 0
}

// containerPID is the host pid of a Docker container's main process.
func containerPID(t testing.TB, name string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(must(t, docker(t, "inspect", "-f", "{{.State.Pid}}", name), "the pid of "+name)))
	if err != nil || pid == 0 {
		t.Fatalf("container %s has no pid (%v)", name, err)
	}
	return pid
}

// podProcess finds the host pid of the process named comm in a pod of the built-in cluster (whose
// node is this machine), by the pod's UID in the process's cgroup.
func podProcess(t testing.TB, ns, pod, comm string) int {
	t.Helper()
	uid := strings.TrimSpace(jsonpath(t, ns, "pod/"+pod, "{.metadata.uid}"))
	if uid == "" {
		t.Fatalf("pod %s/%s has no UID", ns, pod)
	}
	ids := [][]byte{[]byte(uid), []byte(strings.ReplaceAll(uid, "-", "_"))}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		name, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if strings.TrimSpace(string(name)) != comm {
			continue
		}
		cg, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cgroup"))
		if bytes.Contains(cg, ids[0]) || bytes.Contains(cg, ids[1]) {
			return pid
		}
	}
	t.Fatalf("no process %s in pod %s/%s (uid %s) on this machine", comm, ns, pod, uid)
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
