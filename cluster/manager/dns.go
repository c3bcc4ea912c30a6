package manager

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

const (
	// dnsTimeout bounds one forwarded query when the caller has no earlier deadline. The client's
	// stub resolver retries on its own, so one attempt is enough here.
	dnsTimeout = 4 * time.Second
	// dnsCacheFor is how long the kube-dns Service's address is reused before it is read again.
	dnsCacheFor = time.Minute

	dnsHeaderLen = 12
	dnsTCBit     = 0x02 // in the third header byte: the answer was truncated
)

// LookupDNS forwards one wire-format query to the cluster DNS and returns its answer as is.
//
// The query is forwarded unchanged: the client's resolv.conf carries the session namespace's search
// path (NAMESPACE.svc.DOMAIN svc.DOMAIN DOMAIN), so its stub resolver already sends fully qualified
// names and short names need no rewriting here. The cluster DNS's own answers (NXDOMAIN included)
// are returned as they are, not as gRPC errors; a gRPC error means no answer was obtained.
func (m *Manager) LookupDNS(ctx context.Context, req *managerv1.DNSRequest) (*managerv1.DNSResponse, error) {
	if _, err := m.session(req.GetSessionId()); err != nil {
		return nil, err
	}
	q := req.GetQuery()
	if len(q) < dnsHeaderLen || len(q) > 65535 {
		return nil, status.Errorf(codes.InvalidArgument, "DNS query of %d bytes", len(q))
	}
	server, err := m.dnsServer(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cluster DNS: %v", err)
	}
	answer, err := exchange(ctx, server, q)
	if err != nil {
		code := codes.Unavailable
		switch {
		case ctx.Err() != nil:
			code = status.FromContextError(ctx.Err()).Code()
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The socket deadline (the caller's or dnsTimeout) can fire just before ctx reports it.
			code = codes.DeadlineExceeded
		}
		return nil, status.Errorf(code, "forward DNS query to %v: %v", server, err)
	}
	return &managerv1.DNSResponse{Answer: answer}, nil
}

// dnsServer returns the cluster DNS's address: the configured one, else the ClusterIP of
// kube-system/kube-dns (the name CoreDNS keeps for compatibility), else the manager pod's own
// nameserver, which is the same service for a pod with dnsPolicy ClusterFirst.
func (m *Manager) dnsServer(ctx context.Context) (netip.AddrPort, error) {
	if m.cfg.DNSServer != "" {
		return netip.ParseAddrPort(m.cfg.DNSServer) // validated by New
	}
	m.mu.Lock()
	cached, until := m.dnsAddr, m.dnsUntil
	m.mu.Unlock()
	if cached.IsValid() && time.Now().Before(until) {
		return cached, nil
	}

	addr, err := m.kubeDNS(ctx)
	if err != nil {
		if len(m.cfg.ResolvConf.Nameservers) == 0 {
			return netip.AddrPort{}, err
		}
		m.log.Debug("no kube-dns service, using resolv.conf's nameserver", "error", err)
		addr = netip.AddrPortFrom(m.cfg.ResolvConf.Nameservers[0], 53)
	}
	m.mu.Lock()
	m.dnsAddr, m.dnsUntil = addr, time.Now().Add(dnsCacheFor)
	m.mu.Unlock()
	return addr, nil
}

func (m *Manager) kubeDNS(ctx context.Context) (netip.AddrPort, error) {
	svc, err := m.k8s.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("get kube-system/kube-dns: %w", err)
	}
	ips := clusterIPs(svc)
	if len(ips) == 0 {
		return netip.AddrPort{}, errors.New("kube-system/kube-dns has no ClusterIP")
	}
	port := uint16(53)
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "UDP" || p.Protocol == "" {
			port = uint16(p.Port)
			break
		}
	}
	return netip.AddrPortFrom(ips[0], port), nil
}

// exchange sends q over UDP and, when the answer is truncated, again over TCP.
func exchange(ctx context.Context, server netip.AddrPort, q []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	answer, err := exchangeUDP(ctx, server, q)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	if answer[2]&dnsTCBit == 0 {
		return answer, nil
	}
	answer, err = exchangeTCP(ctx, server, q)
	if err != nil {
		return nil, fmt.Errorf("tcp after a truncated udp answer: %w", err)
	}
	return answer, nil
}

func exchangeUDP(ctx context.Context, server netip.AddrPort, q []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := deadlineFromContext(ctx, conn)
	defer stop()
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		// A connected socket only hears from server, but a late answer to an earlier query on a
		// reused port could still arrive; answers must carry the query's ID.
		if isAnswerTo(buf[:n], q) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

func exchangeTCP(ctx context.Context, server netip.AddrPort, q []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", server.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := deadlineFromContext(ctx, conn)
	defer stop()
	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(q)), uint16(len(q)))
	if _, err := conn.Write(append(msg, q...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	answer := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, answer); err != nil {
		return nil, err
	}
	if !isAnswerTo(answer, q) {
		return nil, errors.New("answer does not match the query")
	}
	return answer, nil
}

// isAnswerTo reports whether a is a response (QR set) with q's ID.
func isAnswerTo(a, q []byte) bool {
	return len(a) >= dnsHeaderLen && a[0] == q[0] && a[1] == q[1] && a[2]&0x80 != 0
}

// deadlineFromContext applies ctx's deadline to conn and closes conn if ctx is cancelled earlier.
func deadlineFromContext(ctx context.Context, conn net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { conn.Close() })
}

// ResolvConf is what the manager uses from a resolv.conf.
type ResolvConf struct {
	Nameservers []netip.Addr
	Search      []string
}

// ParseResolvConf reads the nameserver and search lines of a resolv.conf. Unknown lines and bad
// addresses are skipped, as the libc resolver does.
func ParseResolvConf(r io.Reader) (ResolvConf, error) {
	var rc ResolvConf
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil {
				rc.Nameservers = append(rc.Nameservers, a)
			}
		case "search":
			// The last search line wins, as in libc.
			rc.Search = nil
			for _, s := range f[1:] {
				rc.Search = append(rc.Search, strings.TrimSuffix(s, "."))
			}
		case "domain":
			if rc.Search == nil {
				rc.Search = []string{strings.TrimSuffix(f[1], ".")}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return rc, fmt.Errorf("read resolv.conf: %w", err)
	}
	return rc, nil
}
