package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"teledock.dev/teledock/internal/flow"
)

// framedServer serves framed tunnels with s on a loopback port, as the manager's client-raw port
// does, and returns a dial that opens a client end through a stand-in for a port-forward: a
// stream that cannot half-close, relayed to the port by a copier that ends both ways as soon as
// either ends (what container runtimes do, only sooner).
func framedServer(t testing.TB, s *Server) func() *FramedConn {
	t.Helper()
	lis := listenTCP(t, func(c *net.TCPConn) {
		fc := NewFramedConn(c, func() { flow.Reset(c) })
		_, d, err := ReadRawHello(fc)
		if err != nil {
			fc.Close()
			return
		}
		_ = s.ServeRaw(context.Background(), fc, d)
	})
	return func() *FramedConn {
		client, relay := net.Pipe()
		up, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, relay); done <- struct{}{} }()
			go func() { _, _ = io.Copy(relay, up); done <- struct{}{} }()
			<-done
			relay.Close()
			up.Close()
		}()
		return NewFramedConn(client, func() { client.Close() })
	}
}

// A framed tunnel carries bytes both ways with half-close although its stream has none: the
// destination hashes what it reads until EOF and then answers; the client reads the answer until
// EOF.
func TestFramedTunnel(t *testing.T) {
	checkGoroutines(t)
	s := newRawTestServer(t)
	checkHashRoundTrip(t, s, framedServer(t, s)(), "", 2<<20) // 2 MiB: frames split at maxFrame
}

// A flow cut short at either end is a reset at the other, never a clean end.
func TestFramedTunnelAborts(t *testing.T) {
	dial := framedServer(t, newRawTestServer(t))
	checkResets(t, func() RawEnd { return dial() }, "")
}

// What a framed reader makes of streams that break the framing.
func TestFramedConnReads(t *testing.T) {
	frame := func(n uint32, payload string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), payload...)
	}
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
		wantEOF bool
	}{
		{name: "data then close", in: append(frame(3, "abc"), frame(frameClose, "")...), want: "abc", wantEOF: true},
		{name: "empty stream", in: nil, wantErr: ErrAborted},
		{name: "end without close frame", in: frame(3, "abc"), want: "abc", wantErr: ErrAborted},
		{name: "end inside a frame", in: frame(5, "abc"), want: "abc", wantErr: ErrAborted},
		{name: "abort", in: append(frame(2, "ab"), frame(frameAbort, "")...), want: "ab", wantErr: syscall.ECONNRESET},
		{name: "oversized frame", in: frame(maxFrame+1, ""), wantErr: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFramedConn(nopCloser{bytes.NewReader(tt.in)}, func() {})
			got, err := io.ReadAll(c)
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
			switch {
			case tt.wantEOF && err != nil:
				t.Errorf("err = %v, want a clean EOF", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

type nopCloser struct{ io.Reader }

func (nopCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopCloser) Close() error                { return nil }

// An abort reaches the peer in-band, before (or without) the stream ending: a port-forward may
// keep its streams open for a while after one side is gone.
func TestFramedConnAbortFrame(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	defer a.Close()
	// A stream whose close and reset do not reach the peer.
	client := NewFramedConn(struct {
		io.ReadWriter
		io.Closer
	}{a, io.NopCloser(nil)}, func() {})
	peer := NewFramedConn(b, func() {})
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	go func() {
		_, _ = client.Write([]byte("partial"))
		client.Close()
	}()
	got, err := io.ReadAll(peer)
	if string(got) != "partial" || !errors.Is(err, ErrAborted) {
		t.Fatalf("peer read %q, %v; want the bytes and then ErrAborted", got, err)
	}
}
