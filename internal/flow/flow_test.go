package flow

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// bufferEnd is an End that is not a socket, so Copy takes its buffered path.
type bufferEnd struct {
	r      io.Reader
	w      bytes.Buffer
	closed bool
	fail   error
}

func (b *bufferEnd) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *bufferEnd) Write(p []byte) (int, error) {
	if b.fail != nil {
		return 0, b.fail
	}
	return b.w.Write(p)
}
func (b *bufferEnd) CloseWrite() error { b.closed = true; return nil }

// Join passes each side's bytes and EOF to the other, both ways at once, and returns nil.
func TestJoinHalfCloses(t *testing.T) {
	client, joinClient := tcpPair(t)
	up := bytes.Repeat([]byte("u"), 1<<20)
	far := &bufferEnd{r: bytes.NewReader(bytes.Repeat([]byte("d"), 3<<20))}
	done := make(chan error, 1)
	go func() {
		done <- Join(Side{"client", joinClient}, Side{"tunnel", far}, func() { t.Error("aborted") })
	}()
	go func() {
		_, _ = client.Write(up)
		_ = client.CloseWrite()
	}()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 3<<20 || !bytes.Equal(far.w.Bytes(), up) || !far.closed {
		t.Errorf("down %d bytes, up %d bytes, far closed %v", len(got), far.w.Len(), far.closed)
	}
}

// A failing write aborts the flow; the error says which way it failed.
func TestJoinAbortsBothWays(t *testing.T) {
	client, joinClient := tcpPair(t)
	// The tunnel sends nothing until it is closed, as a stalled far end would.
	pr, pw := io.Pipe()
	far := &bufferEnd{r: pr, fail: errors.New("tunnel broke")}
	aborted := 0
	err := make(chan error, 1)
	go func() {
		err <- Join(Side{"client", joinClient}, Side{"tunnel", far}, func() {
			aborted++
			Reset(joinClient)
			_ = pw.CloseWithError(net.ErrClosed)
		})
	}()
	_, _ = client.Write([]byte("hello"))
	e := <-err
	if e == nil || !strings.Contains(e.Error(), "client -> tunnel: write: tunnel broke") {
		t.Errorf("Join = %v, want the failed direction and cause", e)
	}
	if aborted != 1 {
		t.Errorf("abort called %d times, want 1", aborted)
	}
	// The reset reaches the client as a failure, not as a clean EOF.
	if _, rerr := io.ReadAll(client); rerr == nil {
		t.Error("the client read a clean end after an aborted flow")
	}
}
