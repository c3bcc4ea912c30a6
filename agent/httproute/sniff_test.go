package httproute

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"
)

func TestClassifyPrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    protocol
		decided bool
	}{
		{"", protoH2C, false}, // nothing yet
		{"G", protoOther, false},
		{"GET", protoOther, false},
		{"GET /", protoOther, false},
		{"GET / HTTP/1.", protoOther, false},
		{"GET / HTTP/1.1\r", protoOther, false},
		{"GET / HTTP/1.1\r\n", protoHTTP1, true},
		{"GET / HTTP/1.0\n", protoHTTP1, true},
		{"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", protoHTTP1, true},
		{"CONNECT db:5432 HTTP/1.1\r\n", protoHTTP1, true},
		{"GET / HTTP/2.0\r\n", protoOther, true},
		{"GET  / HTTP/1.1\r\n", protoOther, true},
		{"GET /\x00 HTTP/1.1\r\n", protoOther, true},
		{"\x16\x03\x01\x02\x00", protoOther, true}, // a TLS client hello
		{"SSH-2.0-OpenSSH_9.6\r\n", protoOther, true},
		{"PRI * HTTP/2.0\r\n", protoH2C, false},
		{h2Preface, protoH2C, true},
		{h2Preface + "\x00\x00\x12\x04", protoH2C, true},
		{"PRI * HTTP/1.1\r\n", protoHTTP1, true}, // a method named PRI is still HTTP/1.1
	}
	for _, tt := range tests {
		got, decided := classifyPrefix([]byte(tt.in))
		if decided != tt.decided || (decided && got != tt.want) {
			t.Errorf("classifyPrefix(%q) = %v, %v; want %v, %v", tt.in, got, decided, tt.want, tt.decided)
		}
	}
}

func TestNotHTTPGoesToAppWhole(t *testing.T) {
	// An echo server that tells when its client is done.
	app := startRawServer(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	var stats Stats
	r := startRouter(t, Config{
		App:    tcpDialer(app.addr),
		Routes: []Route{{Name: "alice", Match: mustCompile(t, Filter{}), Dial: failingDialer}},
		Stats:  &stats,
	})
	c := r.dial(t)
	msg := append([]byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01}, bytes.Repeat([]byte{0, 1, 2, 0xff}, 50000)...)
	go func() {
		c.Write(msg[:3]) // the sniffed bytes and the rest must arrive in order
		c.Write(msg[3:])
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
	}
	eventually(t, "Serve to return", func() bool { return r.served() == 1 })
	if stats.NotHTTP.Load() != 1 || stats.Requests.Load() != 0 {
		t.Errorf("NotHTTP = %d, Requests = %d; want 1, 0", stats.NotHTTP.Load(), stats.Requests.Load())
	}
}

func TestServerSpeaksFirst(t *testing.T) {
	app := startRawServer(t, func(c *net.TCPConn) {
		io.WriteString(c, "220 ready\r\n")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(c, "250 "+line)
	})
	var stats Stats
	r := startRouter(t, Config{App: tcpDialer(app.addr), SniffTimeout: 50 * time.Millisecond, Stats: &stats})
	c := r.dial(t)
	br := bufio.NewReader(c)
	// The client says nothing until the server greets it.
	greeting, err := br.ReadString('\n')
	if err != nil || greeting != "220 ready\r\n" {
		t.Fatalf("greeting = %q, %v", greeting, err)
	}
	// Bytes sent now must reach the app, though a read started while sniffing takes them.
	io.WriteString(c, "HELO GET / HTTP/1.1\r\n")
	reply, err := br.ReadString('\n')
	if err != nil || reply != "250 HELO GET / HTTP/1.1\r\n" {
		t.Fatalf("reply = %q, %v", reply, err)
	}
	if stats.NotHTTP.Load() != 1 {
		t.Errorf("NotHTTP = %d; want 1", stats.NotHTTP.Load())
	}
}

// A client that opens its connection ahead of its first request (a pool) and is silent past the
// sniff timeout is still routed per request: the app, dialled meanwhile, said nothing first.
func TestClientOpensAhead(t *testing.T) {
	app, alice := &recorder{name: "app"}, &recorder{name: "alice"}
	appSrv, aliceSrv := httptest.NewServer(app), httptest.NewServer(alice)
	defer appSrv.Close()
	defer aliceSrv.Close()
	var stats Stats
	r := startRouter(t, Config{
		App:          tcpDialer(appSrv.Listener.Addr().String()),
		Routes:       []Route{{Name: "alice", Match: devHeader("alice"), Dial: tcpDialer(aliceSrv.Listener.Addr().String())}},
		SniffTimeout: 20 * time.Millisecond,
		Stats:        &stats,
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	// Silence past the sniff timeout is the case under test: nothing to poll for.
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "GET /ahead HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "alice /ahead" {
		t.Fatalf("request after a silence answered %q; want alice /ahead", body)
	}
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "app /next" {
		t.Fatalf("next request answered %q; want app /next", body)
	}
	if stats.NotHTTP.Load() != 0 {
		t.Errorf("NotHTTP = %d; want 0", stats.NotHTTP.Load())
	}
}
