package pprofserver

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestStart(t *testing.T) {
	stop, err := Start("", discard)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	for _, bad := range []string{"0.0.0.0:6060", ":6060", "10.1.2.3:6060", "localhost:6060", "127.0.0.1"} {
		if _, err := Start(bad, discard); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Start(%q) = %v, want ErrNotLoopback", bad, err)
		}
	}
	// A free loopback port: the index answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err = Start(addr, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Errorf("goroutine profile: %d, %d bytes", resp.StatusCode, len(body))
	}
}
