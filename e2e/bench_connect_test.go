//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// timingRow is one step of the connect table, measured once per run.
type timingRow struct {
	name   string
	detail bool // a phase of connect: no ratios
	runs   []time.Duration
}

func (r *timingRow) add(d time.Duration) { r.runs = append(r.runs, d) }

func (r *timingRow) median() time.Duration {
	s := slices.Clone(r.runs)
	slices.Sort(s)
	return s[len(s)/2]
}

// printTimingTable prints rows with their runs and medians; rows that are not details get ratios
// of their medians to direct's and pf's.
func printTimingTable(title string, rows []*timingRow, direct, pf *timingRow, notes []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n", title)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "step\t")
	for i := range rows[0].runs {
		fmt.Fprintf(w, "run %d\t", i+1)
	}
	fmt.Fprintln(w, "median\tx direct\tx pf\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t", r.name)
		for _, d := range r.runs {
			fmt.Fprintf(w, "%s\t", seconds(d))
		}
		vsDirect, vsPF := "", ""
		if !r.detail {
			vsDirect = fmt.Sprintf("%.0f", r.median().Seconds()/direct.median().Seconds())
			vsPF = fmt.Sprintf("%.2f", r.median().Seconds()/pf.median().Seconds())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t\n", seconds(r.median()), vsDirect, vsPF)
	}
	w.Flush()
	for _, n := range notes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	fmt.Print(b.String())
}

// seconds formats a timing; a negative one was not observed.
func seconds(d time.Duration) string {
	if d < 0 {
		return "?"
	}
	if d < time.Second {
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// firstGET times a GET on a new connection.
func firstGET(t testing.TB, url string) time.Duration {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(start)
}

// timedLine is a line a command printed on stderr and when.
type timedLine struct {
	at   time.Time
	text string
}

// timedRun runs a program and notes when each line of its stderr appeared.
func timedRun(t testing.TB, timeout time.Duration, name string, args ...string) (cmdResult, time.Time, []timedLine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []timedLine
	var errText strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		lines = append(lines, timedLine{at: time.Now(), text: sc.Text()})
		fmt.Fprintln(&errText, sc.Text())
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, ctx.Err())
	}
	return cmdResult{stdout: out.String(), stderr: errText.String(), err: err}, start, lines
}

// connectMarks says when each phase of a connect ended, counted from start: the CLI's stderr
// for the container start, the daemon's log for the rest (see the rows of TestBenchConnect); -1
// where the line was not found.
func connectMarks(t testing.TB, conn string, start time.Time, cli []timedLine, total time.Duration) []time.Duration {
	t.Helper()
	marks := []time.Duration{-1, -1, -1, -1, -1, total}
	for _, l := range cli {
		if strings.HasPrefix(l.text, "Connecting to the traffic-manager") {
			marks[0] = l.at.Sub(start)
		}
	}
	r := docker(t, "logs", "teledock-daemon-"+conn)
	must(t, r, "daemon log")
	logs := r.stdout + r.stderr // the daemon logs to its stderr, which docker logs passes through
	for i, msg := range []string{`msg=starting`, `msg="api listening"`, `msg="session arrived"`, `msg="network ready"`} {
		if at, ok := logTime(logs, msg); ok {
			marks[i+1] = at.Sub(start)
		}
	}
	return marks
}

// logTime finds the first slog text line containing msg and returns its time= field.
func logTime(logs, msg string) (time.Time, bool) {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		f, _, _ := strings.Cut(line, " ")
		ts, ok := strings.CutPrefix(f, "time=")
		if !ok {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}
