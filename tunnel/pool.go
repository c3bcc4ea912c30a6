package tunnel

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// dirtyPool is a tiered buffer pool whose buffers come back as they were left. gRPC's own pools
// clear a buffer's whole capacity on every Get, and its proto codec takes from the 1 MiB tier of
// the default pool for a message that carries a 64 KiB chunk: make bench found memclr at 11-24 % of
// the daemon's and the manager's CPU. gRPC writes every byte of a buffer it gets before it reads
// it (frames are read in full, messages are marshalled or copied in), so clearing buys nothing
// here.
type dirtyPool struct {
	tiers [maxTierShift + 1]*sync.Pool // tiers[i] holds buffers of capacity 1<<i; nil: not a tier
}

const (
	minTierShift = 8  // 256 B: below, gRPC does not pool
	maxTierShift = 20 // 1 MiB: above, buffers are allocated and dropped
)

// newDirtyPool makes a pool with a tier for each power of two from 256 B to 1 MiB: a 64 KiB
// chunk's message (just over 64 KiB) takes a 128 KiB buffer, a 16 KiB HTTP/2 frame a 16 KiB one.
func newDirtyPool() *dirtyPool {
	p := &dirtyPool{}
	for s := minTierShift; s <= maxTierShift; s++ {
		size := 1 << s
		p.tiers[s] = &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	}
	return p
}

// shift is the tier for a buffer of n bytes: the smallest power of two that holds it.
func shift(n int) int {
	if n <= 1<<minTierShift {
		return minTierShift
	}
	return bits.Len(uint(n - 1))
}

func (p *dirtyPool) Get(n int) *[]byte {
	s := shift(n)
	if s > maxTierShift {
		b := make([]byte, n)
		return &b
	}
	b := p.tiers[s].Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	// Only a whole tier buffer goes back: one that did not come from here (or was cut) would make
	// a later Get too short.
	if c < 1<<minTierShift || c > 1<<maxTierShift || c&(c-1) != 0 {
		return
	}
	*b = (*b)[:c]
	p.tiers[bits.Len(uint(c))-1].Put(b)
}

// bufferPool serves gRPC's transport (DialOptions, ServerOptions) and, as its default pool, its
// codecs: what the proto codec marshals into and what a received message is gathered into.
var bufferPool mem.BufferPool = newDirtyPool()

func init() {
	// The codec takes mem.DefaultBufferPool(), which only this sets; gRPC asks for it to be set at
	// init, before any connection exists. Every process that carries tunnels imports this package.
	experimental.SetDefaultBufferPool(bufferPool)
}
