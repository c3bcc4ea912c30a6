package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	miekg "github.com/miekg/dns"
)

// errNoUpstream answers non-cluster names when the namespace had no nameservers.
var errNoUpstream = errors.New("no upstream nameservers")

// handler answers one query at a time; miekg runs it on a goroutine per query.
type handler struct {
	ctx       context.Context // cancelled when Run stops
	log       *slog.Logger
	route     *router
	cluster   Exchanger
	upstreams []string
	timeout   time.Duration
}

var _ miekg.Handler = (*handler)(nil)

// ServeDNS forwards q and writes the answer, or SERVFAIL when forwarding failed.
func (h *handler) ServeDNS(w miekg.ResponseWriter, q *miekg.Msg) {
	if len(q.Question) != 1 {
		// miekg refuses a header that does not count one question, but a packet that ends right
		// after a header counting one unpacks with none; indexing it would crash the daemon.
		_ = w.WriteMsg(new(miekg.Msg).SetRcodeFormatError(q))
		return
	}
	start := time.Now()
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()

	name := q.Question[0].Name
	toCluster := h.route.toCluster(name)
	var resp *miekg.Msg
	var err error
	if toCluster {
		resp, err = h.askCluster(ctx, q)
	} else {
		resp, err = h.askUpstream(ctx, q, network)
	}
	if err != nil {
		resp = new(miekg.Msg).SetRcode(q, miekg.RcodeServerFailure)
	}
	// The client matches the answer by ID, whatever ID the far end used.
	resp.Id = q.Id
	if network == "udp" {
		// Sets TC when records had to go, and the client retries over TCP.
		resp.Truncate(udpSize(q))
	}
	werr := w.WriteMsg(resp)

	if h.log.Enabled(h.ctx, slog.LevelDebug) {
		h.log.Debug("dns query", "name", name, "type", miekg.TypeToString[q.Question[0].Qtype],
			"net", network, "cluster", toCluster, "rcode", miekg.RcodeToString[resp.Rcode],
			"truncated", resp.Truncated, "took", time.Since(start), "err", errors.Join(err, werr))
	}
}

// udpSize is the largest UDP answer the client accepts: its EDNS0 buffer size, or 512 bytes.
func udpSize(q *miekg.Msg) int {
	if opt := q.IsEdns0(); opt != nil {
		return max(int(opt.UDPSize()), miekg.MinMsgSize)
	}
	return miekg.MinMsgSize
}

func (h *handler) askCluster(ctx context.Context, q *miekg.Msg) (*miekg.Msg, error) {
	query, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	answer, err := h.cluster.Exchange(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	resp := new(miekg.Msg)
	if err := resp.Unpack(answer); err != nil {
		return nil, fmt.Errorf("cluster: unpack answer: %w", err)
	}
	return resp, nil
}

// askUpstream tries each upstream in turn over the client's transport, giving each an equal
// share of the time left, and returns the first answer of any rcode.
func (h *handler) askUpstream(ctx context.Context, q *miekg.Msg, network string) (*miekg.Msg, error) {
	if len(h.upstreams) == 0 {
		return nil, errNoUpstream
	}
	c := &miekg.Client{Net: network}
	var errs []error
	for i, up := range h.upstreams {
		actx := ctx
		if deadline, ok := ctx.Deadline(); ok {
			share := time.Until(deadline) / time.Duration(len(h.upstreams)-i)
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, share)
			defer cancel()
		}
		resp, _, err := c.ExchangeContext(actx, q, up)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("upstream %s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
