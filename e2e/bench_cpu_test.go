//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Where the CPU goes is the first thing to know about a slow path on a 2-core machine: the
// sampler reads every process's CPU time from /proc while a measurement runs, so a table can say
// which component burnt it. Processes are grouped by role; the groups are system-wide, so an e2e
// run going on at the same time shows up in them too.

// clockTicks is USER_HZ, the unit of /proc times; 100 on every Linux architecture Go supports
// without cgo asking sysconf.
const clockTicks = 100

// sampleEvery is the resolution of CPU windows and bounds what the sampler misses of a process
// that exits mid-measurement. One /proc walk takes about 4 ms here (~110 processes), so sampling
// costs ~4% of one core, charged to the "test" group.
const sampleEvery = 100 * time.Millisecond

// cpuUsage is CPU time by group over a wall time; the zero value means "not measured".
type cpuUsage struct {
	wall   time.Duration
	busy   time.Duration // the whole machine, from /proc/stat: all cores' non-idle time
	groups map[string]time.Duration
}

// cores is a group's average number of busy cores. "other" sums every "other:<command>".
func (u cpuUsage) cores(group string) float64 {
	if u.wall <= 0 {
		return 0
	}
	var d time.Duration
	for g, v := range u.groups {
		if g == group || (group == "other" && strings.HasPrefix(g, "other:")) {
			d += v
		}
	}
	return d.Seconds() / u.wall.Seconds()
}

// topOther names the process outside the known groups that used the most CPU, with its cores:
// on a shared machine, that is usually who disturbed the measurement.
func (u cpuUsage) topOther() string {
	var name string
	var most time.Duration
	for g, v := range u.groups {
		if c, ok := strings.CutPrefix(g, "other:"); ok && v > most {
			name, most = c, v
		}
	}
	if name == "" {
		return "-"
	}
	return fmt.Sprintf("%s %.2f", name, most.Seconds()/u.wall.Seconds())
}

func (u cpuUsage) busyCores() float64 {
	if u.wall <= 0 {
		return 0
	}
	return u.busy.Seconds() / u.wall.Seconds()
}

// cpuGroups are the columns of CPU tables, in order; other processes count as "other".
var cpuGroups = []string{"daemon", "apiserver", "kubelet", "cri", "manager", "echo", "probe", "kubectl", "test", "docker", "other"}

// groupOf names the role of a process from its command name (and, for the two containerds, its
// command line).
func groupOf(pid int, comm string) string {
	switch comm {
	case "teledock-daemon":
		return "daemon"
	case "kube-apiserver":
		return "apiserver"
	case "kubelet":
		return "kubelet"
	case "traffic-manager":
		return "manager"
	case "echo", "probe", "kubectl":
		return comm
	case "e2e.test":
		return "test" // the delay proxy, the tunnel-only forwarders and this sampler
	case "dockerd", "docker-proxy", "docker", "runc", "containerd-shim", "teledock":
		return "docker"
	case "containerd":
		// The cluster's containerd serves port-forwards (CRI streaming); Docker's does not.
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if bytes.Contains(cmdline, []byte("teledock-cluster")) {
			return "cri"
		}
		return "docker"
	}
	return "other:" + comm
}

type procKey struct {
	pid   int
	start uint64 // start time in ticks, so that a reused pid is a new process
}

type procSample struct {
	group string
	ticks uint64
}

// snapshot is the CPU time of every process and of the machine at one moment.
type snapshot struct {
	at    time.Time
	busy  uint64
	procs map[procKey]procSample
}

func takeSnapshot() snapshot {
	return snapshot{at: time.Now(), busy: machineBusyTicks(), procs: readProcs()}
}

// cpuSampler takes a snapshot every sampleEvery until stopped.
type cpuSampler struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex // guards snaps
	snaps []snapshot
}

func startCPUSampler() *cpuSampler {
	s := &cpuSampler{done: make(chan struct{}), snaps: []snapshot{takeSnapshot()}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				snap := takeSnapshot()
				s.mu.Lock()
				s.snaps = append(s.snaps, snap)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// stop ends sampling and returns the snapshots, oldest first.
func (s *cpuSampler) stop() cpuSamples {
	close(s.done)
	s.wg.Wait()
	return append(cpuSamples(s.snaps), takeSnapshot())
}

// cpuSamples are snapshots taken during a measurement, oldest first.
type cpuSamples []snapshot

// between is the CPU time each group used from the first snapshot at or after from to the last
// at or before to, so the window lies inside [from, to] and misses at most sampleEvery at each
// end. A process missing from the first snapshot counts from zero: it started meanwhile. A
// process that exited before the last snapshot is not counted after its last sample.
func (ss cpuSamples) between(from, to time.Time) cpuUsage {
	i := sort.Search(len(ss), func(i int) bool { return !ss[i].at.Before(from) })
	j := sort.Search(len(ss), func(j int) bool { return ss[j].at.After(to) }) - 1
	if i >= len(ss) || j <= i {
		return cpuUsage{} // the window is shorter than the sampling interval
	}
	a, b := ss[i], ss[j]
	u := cpuUsage{wall: b.at.Sub(a.at), busy: ticksToDuration(b.busy - a.busy), groups: map[string]time.Duration{}}
	// Processes that exited between a and b: their last sample before b.
	last := map[procKey]procSample{}
	for _, s := range ss[i : j+1] {
		for k, v := range s.procs {
			last[k] = v
		}
	}
	for k, v := range last {
		u.groups[v.group] += ticksToDuration(v.ticks - a.procs[k].ticks)
	}
	return u
}

func ticksToDuration(t uint64) time.Duration { return time.Duration(t) * time.Second / clockTicks }

// readProcs reads utime+stime of every process.
func readProcs() map[procKey]procSample {
	out := map[procKey]procSample{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// The command name is in parentheses and may hold spaces; the fields after it are fixed.
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		comm := string(b[open+1 : close])
		f := strings.Fields(string(b[close+1:]))
		// After the name: state is field 3 of stat(5), so field n is f[n-3].
		if len(f) < 20 {
			continue
		}
		utime, _ := strconv.ParseUint(f[14-3], 10, 64)
		stime, _ := strconv.ParseUint(f[15-3], 10, 64)
		start, _ := strconv.ParseUint(f[22-3], 10, 64)
		out[procKey{pid, start}] = procSample{group: groupOf(pid, comm), ticks: utime + stime}
	}
	return out
}

// machineBusyTicks is the non-idle time of all cores from /proc/stat.
func machineBusyTicks() uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		busy += n
	}
	return busy
}
