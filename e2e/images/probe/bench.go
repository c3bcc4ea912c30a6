package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// benchResult is what `probe bench` prints; e2e/bench_env_test.go reads it. A transfer stopped by
// -transfer-time reports the bytes it moved in the time it ran. The start times (Unix nanoseconds)
// let the benchmark attribute the CPU it samples meanwhile to each part.
type benchResult struct {
	DownStart   int64   `json:"down_start_ns"`
	DownBytes   int64   `json:"down_bytes"`
	DownSeconds float64 `json:"down_seconds"`
	UpStart     int64   `json:"up_start_ns"`
	UpBytes     int64   `json:"up_bytes"`
	UpSeconds   float64 `json:"up_seconds"`
	// FirstMicros is the first GET of the latency run: connection set-up (DNS, TCP, and a tunnel
	// dial where there is one) plus one request.
	FirstMicros float64 `json:"first_us"`
	P50Micros   float64 `json:"p50_us"`
	P99Micros   float64 `json:"p99_us"`
	Requests    int     `json:"requests"`
}

// ioBufSize is the size of every read and write of the body copies: large enough that syscalls
// do not limit a fast path (net/http's 4 KiB default does, on the direct path).
const ioBufSize = 256 << 10

// bench measures base (the echo app): a download and an upload of n bytes each, then requests
// keep-alive GETs of base/. n == 0 skips the transfers, requests == 0 the GETs. Each part uses a
// fresh connection, so a stopped transfer cannot spoil the next part.
// benchOptions are bench's flags.
type benchOptions struct {
	transferTime time.Duration // stop each transfer after this long; 0: never
	header       string        // NAME:VALUE of the latency GETs; "": none
}

func bench(ctx context.Context, base string, n int64, requests int, bo benchOptions) (benchResult, error) {
	transferTime := bo.transferTime
	var r benchResult
	var err error
	if n > 0 {
		r.DownStart = time.Now().UnixNano()
		if r.DownBytes, r.DownSeconds, err = download(ctx, base, n, transferTime); err != nil {
			return r, fmt.Errorf("download: %w", err)
		}
		r.UpStart = time.Now().UnixNano()
		if r.UpBytes, r.UpSeconds, err = upload(ctx, base, n, transferTime); err != nil {
			return r, fmt.Errorf("upload: %w", err)
		}
	}
	if requests > 0 {
		if err := latency(ctx, base, requests, bo.header, &r); err != nil {
			return r, fmt.Errorf("latency: %w", err)
		}
	}
	return r, nil
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression: true,
		ReadBufferSize:     ioBufSize,
		WriteBufferSize:    ioBufSize,
	}}
}

// download reads base/static?n=n and returns how much arrived and how long it took, from the
// request to the last byte. With a limit, it stops reading when the limit passes.
func download(ctx context.Context, base string, n int64, limit time.Duration) (int64, float64, error) {
	client := newClient()
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/static?n="+strconv.FormatInt(n, 10), nil)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	stop := deadlineAfter(start, limit)
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET: %s", resp.Status)
	}
	buf := make([]byte, ioBufSize)
	var got int64
	for got < n && time.Now().Before(stop) {
		m, err := resp.Body.Read(buf)
		got += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return got, 0, err
		}
	}
	elapsed := time.Since(start).Seconds()
	if got < n && time.Now().Before(stop) {
		return got, 0, fmt.Errorf("body ended after %d of %d bytes", got, n)
	}
	return got, elapsed, nil
}

// upload POSTs n bytes to base/discard and returns how many arrived and how long it took, from the request to the server's answer (which comes after the last byte). With a
// limit, the body ends early when the limit passes.
func upload(ctx context.Context, base string, n int64, limit time.Duration) (int64, float64, error) {
	client := newClient()
	defer client.CloseIdleConnections()
	start := time.Now()
	body := &patternBody{left: n, stop: deadlineAfter(start, limit)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/discard", body)
	if err != nil {
		return 0, 0, err
	}
	if limit <= 0 {
		req.ContentLength = n
	} else {
		req.ContentLength = -1 // chunked: the length is known only when the limit passes
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start).Seconds()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("POST: %s: %s", resp.Status, reply)
	}
	// The echo app answers with the byte count it received: a figure counts only what arrived. (The
	// e2e tests check content with /bytes and /sha256; here checksums would measure the app.)
	sent := n - body.left
	if want := fmt.Sprint(sent); strings.TrimSpace(string(reply)) != want {
		return 0, 0, fmt.Errorf("server received %q bytes, want %s", reply, want)
	}
	return sent, elapsed, nil
}

// latency times requests keep-alive GETs of base/ after a first GET that sets up the connection.
func latency(ctx context.Context, base string, requests int, header string, r *benchResult) error {
	hname, hvalue, _ := strings.Cut(header, ":")
	client := newClient()
	defer client.CloseIdleConnections()
	get := func() (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		if err != nil {
			return 0, err
		}
		if hname != "" {
			req.Header.Set(strings.TrimSpace(hname), strings.TrimSpace(hvalue))
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		// Reading to EOF is what lets the transport reuse the connection.
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET: %s", resp.Status)
		}
		return time.Since(start), err
	}
	first, err := get()
	if err != nil {
		return err
	}
	lat := make([]time.Duration, requests)
	for i := range lat {
		if lat[i], err = get(); err != nil {
			return err
		}
	}
	slices.Sort(lat)
	r.FirstMicros = micros(first)
	r.P50Micros = micros(quantile(lat, 0.50))
	r.P99Micros = micros(quantile(lat, 0.99))
	r.Requests = requests
	return nil
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// deadlineAfter is start+limit, or the far future when there is no limit.
func deadlineAfter(start time.Time, limit time.Duration) time.Time {
	if limit <= 0 {
		return start.Add(100 * 365 * 24 * time.Hour)
	}
	return start.Add(limit)
}

// patternBody is an upload body: the pattern stream (see e2e/pattern) served from a precomputed
// block, because generating it byte by byte costs a core at the direct path's speed. It ends after
// left bytes or at stop.
type patternBody struct {
	left int64
	off  int64
	stop time.Time
}

// patternBlock holds whole periods of the pattern, so any offset into it continues the stream.
var patternBlock = func() []byte {
	b := make([]byte, 251*1024)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

func (p *patternBody) Read(b []byte) (int, error) {
	if p.left == 0 || !time.Now().Before(p.stop) {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.left)]
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternBlock[(p.off+int64(n))%251:])
	}
	p.off += int64(n)
	p.left -= int64(n)
	return n, nil
}
