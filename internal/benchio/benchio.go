// Package benchio is the two ends of the data plane's throughput benchmarks (tunnel, broker): a
// destination that counts what it gets or sends what it is asked for, and the loops that drive a
// connection to it. Only tests import it.
package benchio

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// Block is what one benchmark operation moves: one read of internal/flow's copy buffer, the
// largest write a daemon or agent hands a tunnel.
const Block = 128 << 10

// CountingSink reads c to EOF, answers with the number of bytes read (8 bytes, big endian) and
// closes its write half.
func CountingSink(c *net.TCPConn) {
	buf := make([]byte, Block)
	var n uint64
	for {
		k, err := c.Read(buf)
		n += uint64(k)
		if err != nil {
			break
		}
	}
	c.Write(binary.BigEndian.AppendUint64(nil, n))
	c.CloseWrite()
}

// SizedSource reads a count (8 bytes, big endian) from c, writes that many bytes in Block
// writes and closes its write half.
func SizedSource(c *net.TCPConn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	buf := make([]byte, Block)
	for n := binary.BigEndian.Uint64(hdr[:]); n > 0; {
		k := min(n, uint64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
	c.CloseWrite()
}

type closeWriteConn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Upload writes b.N blocks to a connection to a CountingSink and checks the count it
// answers with.
func Upload(b *testing.B, dial func() io.ReadWriteCloser) {
	c := dial().(closeWriteConn)
	defer c.Close()
	buf := make([]byte, Block)
	b.SetBytes(Block)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	ans, err := io.ReadAll(c)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if want := uint64(b.N) * Block; len(ans) != 8 || binary.BigEndian.Uint64(ans) != want {
		b.Fatalf("destination answered %x, want the count %d", ans, want)
	}
}

// Download asks a SizedSource for b.N blocks and reads them with a Block buffer, as
// internal/flow.Copy does.
func Download(b *testing.B, dial func() io.ReadWriteCloser) {
	c := dial().(closeWriteConn)
	defer c.Close()
	buf := make([]byte, Block)
	want := uint64(b.N) * Block
	b.SetBytes(Block)
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := c.Write(binary.BigEndian.AppendUint64(nil, want)); err != nil {
		b.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var got uint64
	for {
		n, err := c.Read(buf)
		got += uint64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got != want {
		b.Fatalf("received %d bytes, want %d", got, want)
	}
}

// Sink listens on loopback and serves every connection as a CountingSink until the test ends.
func Sink(tb testing.TB) net.Addr { return listen(tb, CountingSink) }

// Source listens on loopback and serves every connection as a SizedSource until the test ends.
func Source(tb testing.TB) net.Addr { return listen(tb, SizedSource) }

func listen(tb testing.TB, serve func(*net.TCPConn)) net.Addr {
	tb.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := lis.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	return lis.Addr()
}
