package forward

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxDatagram = 64 << 10
	// udpQueue is how many datagrams a flow buffers while its destination is dialed or slow.
	udpQueue = 64
)

type flowKey struct {
	listen string
	src    netip.AddrPort
}

// udpFlow is the datagrams of one client address on one target.
type udpFlow struct {
	key  flowKey
	in   chan []byte  // client datagrams; each slice belongs to the flow once sent
	last atomic.Int64 // unix nanoseconds of the last datagram either way
	done chan struct{}
	once sync.Once
}

func (fl *udpFlow) touch() { fl.last.Store(time.Now().UnixNano()) }
func (fl *udpFlow) stop()  { fl.once.Do(func() { close(fl.done) }) }

func (fl *udpFlow) ended() bool {
	select {
	case <-fl.done:
		return true
	default:
		return false
	}
}

// serveUDP reads datagrams until the socket is closed and hands each to its flow.
func (f *Forwarder) serveUDP(pc *net.UDPConn, t Target) {
	defer f.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.ctx.Err() != nil {
				return
			}
			f.log.Debug("udp read", "target", t.Name, "err", err)
			if !f.sleepCtx(5 * time.Millisecond) {
				return
			}
			continue
		}
		fl := f.flowFor(pc, t, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
		if fl == nil {
			return
		}
		// buf is reused for the next read; the flow gets its own copy.
		select {
		case fl.in <- bytes.Clone(buf[:n]):
		default:
			f.udpDrops.Add(1)
		}
	}
}

// flowFor returns the flow of src, starting one when there is none. It returns nil once the
// Forwarder is closed.
func (f *Forwarder) flowFor(pc *net.UDPConn, t Target, src netip.AddrPort) *udpFlow {
	key := flowKey{t.Listen, src}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	if fl, ok := f.flows[key]; ok && !fl.ended() {
		return fl
	}
	fl := &udpFlow{key: key, in: make(chan []byte, udpQueue), done: make(chan struct{})}
	fl.touch()
	f.flows[key] = fl
	f.wg.Add(1)
	go f.runFlow(pc, t, fl)
	return fl
}

// runFlow dials the flow's destination and passes datagrams both ways until the flow has been
// idle for UDPIdleTimeout, the destination fails, or the Forwarder closes. Datagrams that
// arrive after it ended start a new flow.
func (f *Forwarder) runFlow(pc *net.UDPConn, t Target, fl *udpFlow) {
	defer f.wg.Done()
	defer func() {
		f.mu.Lock()
		// A datagram that came after the end started a new flow under the same key.
		if f.flows[fl.key] == fl {
			delete(f.flows, fl.key)
		}
		f.mu.Unlock()
	}()
	defer fl.stop()

	flow := Flow{Target: t, Source: fl.key.src}
	up, dst, err := f.dial(flow)
	log := f.log.With("target", t.Name, "src", flow.Source, "dst", dst.Name)
	if err != nil {
		log.Warn("udp flow refused", "err", err)
		return
	}
	replies := make(chan error, 1)
	go func() { replies <- f.flowReplies(pc, up, fl) }()
	defer func() {
		up.Close() // ends the reply reader
		log.Debug("udp flow done", "replies", <-replies)
	}()

	idle := f.cfg.UDPIdleTimeout
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case pkt := <-fl.in:
			if _, err := up.Write(pkt); err != nil {
				log.Debug("udp client -> upstream", "err", err)
				return
			}
			fl.touch()
		case <-timer.C:
			quiet := time.Since(time.Unix(0, fl.last.Load()))
			if quiet >= idle {
				return
			}
			timer.Reset(idle - quiet)
		case <-fl.done: // the reply reader failed
			return
		case <-f.ctx.Done():
			return
		}
	}
}

// flowReplies sends what the destination answers back to the client, from the agent port the
// client sent to.
func (f *Forwarder) flowReplies(pc *net.UDPConn, up Conn, fl *udpFlow) error {
	defer fl.stop()
	buf := make([]byte, maxDatagram)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], fl.key.src); err != nil {
			return err
		}
		fl.touch()
	}
}
