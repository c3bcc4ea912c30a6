package manager

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// DirectConfig describes the direct port: a TLS listener exposed by a NodePort Service, which
// clients use for their tunnels instead of the API server's port-forward.
type DirectConfig struct {
	Service    string // the NodePort Service in the manager's namespace; required
	NodeName   string // the manager's node, whose addresses are offered first; optional
	CACert     []byte // PEM; what clients pin
	ServerName string // the name in the serving certificate
}

// maxDirectNodes bounds the addresses offered: any node's NodePort reaches the manager, and a
// client tries them all at once.
const maxDirectNodes = 8

// tokenKey is how tokens are stored: by their hash, so that the lookup's timing says nothing about
// a token's bytes and the map holds no usable secret.
type tokenKey [sha256.Size]byte

// DirectInfo issues the session a new token for the direct port (the previous one stops working)
// and says where the port is.
func (m *Manager) DirectInfo(ctx context.Context, req *managerv1.SessionRequest) (*managerv1.DirectInfoResponse, error) {
	d := m.cfg.Direct
	if d == nil {
		return nil, status.Error(codes.FailedPrecondition, "the direct transport is not installed (teledock install --direct)")
	}
	s, err := m.clientSession(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	addrs, err := m.directAddresses(ctx, d)
	if err != nil {
		return nil, err
	}
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand's contract since Go 1.24)
	token := base64.RawURLEncoding.EncodeToString(b[:])
	key := tokenKey(sha256.Sum256([]byte(token)))

	m.mu.Lock()
	if m.sessions[s.id] != s {
		m.mu.Unlock()
		return nil, status.Error(codes.NotFound, "no such session (expired?); arrive again")
	}
	delete(m.tokens, s.token)
	s.token = key
	m.tokens[key] = s
	m.mu.Unlock()
	return &managerv1.DirectInfoResponse{Addresses: addrs, CaCert: d.CACert, ServerName: d.ServerName, Token: token}, nil
}

// DirectSession returns the live client session a direct-port token was issued to; it is the
// direct.Lookup of the direct port's guard.
func (m *Manager) DirectSession(token string) (string, bool) {
	key := tokenKey(sha256.Sum256([]byte(token)))
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.tokens[key]
	if !ok || m.sessions[s.id] != s {
		return "", false
	}
	return s.id, true
}

// directAddresses are host:nodePort for the nodes' internal and external addresses, the manager's
// node first.
func (m *Manager) directAddresses(ctx context.Context, d *DirectConfig) ([]string, error) {
	svc, err := m.k8s.CoreV1().Services(m.cfg.Namespace).Get(ctx, d.Service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.FailedPrecondition, "the direct transport's Service %s/%s does not exist", m.cfg.Namespace, d.Service)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get service %s: %v", d.Service, err)
	}
	var nodePort int32
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			nodePort = p.NodePort
			break
		}
	}
	if nodePort == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "service %s/%s has no node port", m.cfg.Namespace, d.Service)
	}
	nodes, err := m.k8s.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list nodes: %v", err)
	}
	items := nodes.Items
	slices.SortStableFunc(items, func(a, b corev1.Node) int {
		switch {
		case a.Name == d.NodeName && b.Name != d.NodeName:
			return -1
		case b.Name == d.NodeName && a.Name != d.NodeName:
			return 1
		}
		return 0
	})
	var out []string
	for i, n := range items {
		if i == maxDirectNodes {
			break
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
				out = append(out, net.JoinHostPort(a.Address, strconv.Itoa(int(nodePort))))
			}
		}
	}
	if len(out) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no node has an address")
	}
	return out, nil
}

func (d *DirectConfig) validate() error {
	if d.Service == "" || len(d.CACert) == 0 || d.ServerName == "" {
		return fmt.Errorf("direct: service, CA certificate and server name are required")
	}
	return nil
}

// ServeRaw serves a raw tunnel on the direct port (see tunnel.RawALPN) whose hello the direct
// port's guard has admitted: the same dialing, session checks and limits as a Tunnel stream.
func (m *Manager) ServeRaw(ctx context.Context, conn tunnel.RawEnd, d *managerv1.Dial) error {
	return m.tunnels.ServeRaw(ctx, conn, d)
}
