package httproute

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadHead(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		err     error // nil: a head
		started bool
		check   func(t *testing.T, h *head)
	}{
		{name: "request", in: "\r\nPOST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: keep-alive, Upgrade\r\n\r\nbody", started: true,
			check: func(t *testing.T, h *head) {
				if string(h.raw) != "POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: keep-alive, Upgrade\r\n\r\n" {
					t.Errorf("raw = %q", h.raw)
				}
				if h.method != "POST" || h.target != "/a?b" || h.minor != 1 || h.contentLength != 5 || h.chunked || !h.connUpgrade || !h.keepAlive() {
					t.Errorf("head = %+v", h)
				}
			}},
		{name: "status", in: "HTTP/1.0 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", started: true,
			check: func(t *testing.T, h *head) {
				if h.status != 204 || h.minor != 0 || !h.chunked || h.keepAlive() {
					t.Errorf("head = %+v", h)
				}
			}},
		{name: "status without reason", in: "HTTP/1.1 200\r\nContent-Length: 1, 1\r\n\r\n", started: true,
			check: func(t *testing.T, h *head) {
				if h.status != 200 || h.contentLength != 1 {
					t.Errorf("head = %+v", h)
				}
			}},
		{name: "bare LF", in: "GET / HTTP/1.1\nHost: x\n\n", started: true,
			check: func(t *testing.T, h *head) {
				if h.header.Get("Host") != "x" {
					t.Errorf("header = %v", h.header)
				}
			}},
		{name: "other coding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", started: true,
			check: func(t *testing.T, h *head) {
				if h.chunked || !h.otherCoding {
					t.Errorf("head = %+v", h)
				}
			}},
		{name: "idle close", in: "", err: io.EOF},
		{name: "truncated", in: "GET / HTTP/1.1\r\nHost:", err: io.ErrUnexpectedEOF, started: true},
		{name: "obsolete folding", in: "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", err: errMalformed, started: true},
		{name: "no colon", in: "GET / HTTP/1.1\r\nX a\r\n\r\n", err: errMalformed, started: true},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", err: errMalformed, started: true},
		{name: "conflicting lengths", in: "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", err: errMalformed, started: true},
		{name: "negative length", in: "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", err: errMalformed, started: true},
		{name: "HTTP/2 request line", in: "GET / HTTP/2.0\r\n\r\n", err: errMalformed, started: true},
		{name: "four parts", in: "GET / x HTTP/1.1\r\n\r\n", err: errMalformed, started: true},
		{name: "bad status", in: "HTTP/1.1 20 OK\r\n\r\n", err: errMalformed, started: true},
		{name: "too large", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", err: errHeadTooLarge, started: true},
		{name: "too many empty lines", in: strings.Repeat("\r\n", maxHeadBytes), err: errHeadTooLarge, started: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, started, err := readHead(bufio.NewReaderSize(strings.NewReader(tt.in), 16), true)
			if started != tt.started {
				t.Errorf("started = %v; want %v", started, tt.started)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v; want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, h)
		})
	}
}

func TestChunkSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0\r\n", 0, true},
		{"1a\r\n", 26, true},
		{"FF;name=value\r\n", 255, true},
		{"10 \r\n", 16, true},
		{"\r\n", 0, false},
		{"-1\r\n", 0, false},
		{"+1\r\n", 0, false},
		{"zz\r\n", 0, false},
		{"ffffffffffffffffff\r\n", 0, false},
	} {
		got, err := chunkSize([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("chunkSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestResponseFraming(t *testing.T) {
	resp := func(s string) *head {
		h, _, err := readHead(bufio.NewReader(strings.NewReader(s)), false)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, tt := range []struct {
		method, resp string
		want         responseEnd
	}{
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", endLength},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", endNone},
		{"GET", "HTTP/1.1 204 No Content\r\n\r\n", endNone},
		{"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", endNone},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", endChunked},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", endClose},
		{"GET", "HTTP/1.1 200 OK\r\n\r\n", endClose},
		{"CONNECT", "HTTP/1.1 200 OK\r\n\r\n", endNone},
		{"CONNECT", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", endLength},
	} {
		if got := responseFraming(tt.method, resp(tt.resp)); got != tt.want {
			t.Errorf("%s %q: %v; want %v", tt.method, tt.resp, got, tt.want)
		}
	}
}

func TestRelayChunkedIsVerbatim(t *testing.T) {
	const body = "5;a=b\r\nhello\r\n" + "7\r\n, world\r\n" + "0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"
	var out, tee bytes.Buffer
	r := bufio.NewReaderSize(strings.NewReader(body+"NEXT"), 16)
	w := bufio.NewWriter(&out)
	if err := (relay{r: r, w: w, tee: &tee}).chunked(); err != nil {
		t.Fatal(err)
	}
	if out.String() != body {
		t.Errorf("relayed %q; want %q", out.String(), body)
	}
	if tee.String() != "hello, world" {
		t.Errorf("tee got %q", tee.String())
	}
	if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
		t.Errorf("left %q; want NEXT", rest)
	}
	// Broken framing is an error, not a guess.
	for _, bad := range []string{"5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhel", "x\r\n"} {
		r := bufio.NewReader(strings.NewReader(bad))
		if err := (relay{r: r, w: bufio.NewWriter(io.Discard)}).chunked(); err == nil {
			t.Errorf("chunked(%q) succeeded", bad)
		}
	}
}

// Requests whose framing other parsers would read differently are refused.
func TestRequestFramingRefused(t *testing.T) {
	for _, raw := range []string{
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\u00a0\r\n\r\n",
	} {
		h, _, err := readHead(bufio.NewReader(strings.NewReader(raw)), true)
		if err == nil && !h.otherCoding {
			t.Errorf("%q was read as chunked %v, length %d; want it refused", raw, h.chunked, h.contentLength)
		}
	}
}
