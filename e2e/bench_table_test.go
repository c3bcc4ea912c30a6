//go:build e2e

package e2e

import (
	"fmt"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// printPathTable prints one row per path, with ratios against the rows refDirect and refPF.
// Transfers that load.transferTime cut short are marked with '*'.
func printPathTable(title string, load benchLoad, results []pathResult, refDirect, refPF int, notes []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n", title)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "path\tdown MB/s\tx direct\tx pf\tup MB/s\tx direct\tx pf\tfirst GET\tp50\tp99\tp50 +direct\tp50 +pf\t")
	d, p := results[refDirect], results[refPF]
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "%s\tfailed: %v\t\t\t\t\t\t\t\t\t\t\t\n", r.name, r.err)
			continue
		}
		f := r.fig
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name,
			mbps(f.downMBps(), f.DownBytes < load.bytes), times(r, d, figures.downMBps), times(r, p, figures.downMBps),
			mbps(f.upMBps(), f.UpBytes < load.bytes), times(r, d, figures.upMBps), times(r, p, figures.upMBps),
			ms(f.first()), ms(f.p50()), ms(f.p99()), plusMs(r, d), plusMs(r, p))
	}
	w.Flush()
	fmt.Fprintf(&b, "  MB = 10^6 bytes; x = ratio to the [ref] row; +direct/+pf = p50 minus the [ref] row's p50.\n")
	fmt.Fprintf(&b, "  * = stopped after %s (the figure is what moved in that time).\n", load.transferTime)
	for _, n := range notes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	fmt.Print(b.String())
}

// printCPUTable prints where the CPU went during each transfer, in cores.
func printCPUTable(results []pathResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nCPU during each transfer, in cores (CPU seconds / wall seconds; the machine has 2):\n\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "path\t\tMB/s\tbusy\tCPU-ms/MB\t%s\ttop other\t\n", strings.Join(cpuGroups, "\t"))
	for _, r := range results {
		if r.err != nil {
			continue
		}
		for _, dir := range []struct {
			name string
			u    cpuUsage
			mbps float64
		}{{"down", r.cpuDown, r.fig.downMBps()}, {"up", r.cpuUp, r.fig.upMBps()}} {
			if dir.u.wall == 0 {
				fmt.Fprintf(w, "%s\t%s\t%.1f\ttoo short to sample\t\n", r.name, dir.name, dir.mbps)
				continue
			}
			cols := make([]string, len(cpuGroups))
			for i, g := range cpuGroups {
				cols[i] = fmt.Sprintf("%.2f", dir.u.cores(g))
			}
			fmt.Fprintf(w, "%s\t%s\t%.1f\t%.2f\t%.2f\t%s\t%s\t\n", r.name, dir.name, dir.mbps, dir.u.busyCores(),
				1000*dir.u.busyCores()/dir.mbps, strings.Join(cols, "\t"), dir.u.topOther())
		}
	}
	w.Flush()
	fmt.Fprintf(&b, "  busy = all cores, from /proc/stat; CPU-ms/MB = busy CPU per MB moved, the cost of a path whatever\n")
	fmt.Fprintf(&b, "  the machine's speed. daemon = teledock-daemon (TUN, gVisor, gRPC, port-forward client);\n")
	fmt.Fprintf(&b, "  cri = the cluster's containerd, which serves port-forwards into pods; test = this test process (the\n")
	fmt.Fprintf(&b, "  delay proxy, the tunnel-only forwarder, the sampler); docker = dockerd, Docker's containerd, shims\n")
	fmt.Fprintf(&b, "  and CLIs. Groups are machine-wide, so a concurrent e2e run lands in them too.\n")
	fmt.Print(b.String())
}

// target is one of the goals the benchmarks report against.
type target struct {
	what  string
	value float64 // NaN when a row it needs failed
	met   bool
	unit  string
}

func atLeast(what string, v, goal float64, unit string) target {
	return target{what: what, value: v, met: v >= goal, unit: unit}
}

func atMost(what string, v, goal float64, unit string) target {
	return target{what: what, value: v, met: v < goal, unit: unit}
}

func printTargets(ts []target) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nTargets:\n")
	for _, t := range ts {
		verdict := "NOT MET"
		switch {
		case math.IsNaN(t.value):
			verdict = "UNKNOWN (a measurement failed)"
		case t.met:
			verdict = "met"
		}
		fmt.Fprintf(&b, "  %-52s %8.2f %-6s %s\n", t.what, t.value, t.unit, verdict)
	}
	fmt.Print(b.String())
}

// ratio is metric(rows[i]) / metric(rows[ref]), NaN if either failed.
func ratio(rows []pathResult, i, ref int, metric func(figures) float64) float64 {
	if rows[i].err != nil || rows[ref].err != nil {
		return math.NaN()
	}
	return metric(rows[i].fig) / metric(rows[ref].fig)
}

// addedMs is how much row i's p50 exceeds row ref's, in milliseconds.
func addedMs(rows []pathResult, i, ref int) float64 {
	if rows[i].err != nil || rows[ref].err != nil {
		return math.NaN()
	}
	return float64(rows[i].fig.p50()-rows[ref].fig.p50()) / float64(time.Millisecond)
}

// mbitps is a row's throughput in Mbit/s, the unit of the delayed target.
func mbitps(rows []pathResult, i int, metric func(figures) float64) float64 {
	if rows[i].err != nil {
		return math.NaN()
	}
	return metric(rows[i].fig) * 8
}

func mbps(v float64, capped bool) string {
	if capped {
		return fmt.Sprintf("%.1f*", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func times(r, ref pathResult, metric func(figures) float64) string {
	if ref.err != nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", metric(r.fig)/metric(ref.fig))
}

func plusMs(r, ref pathResult) string {
	if ref.err != nil {
		return "-"
	}
	return fmt.Sprintf("%+.2fms", float64(r.fig.p50()-ref.fig.p50())/float64(time.Millisecond))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
