package manager

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// The manager serves its API on two endpoints. Clients come through an API-server port-forward,
// which arrives on the pod's loopback, so their endpoint listens there only: using it takes the
// Kubernetes right to port-forward into the manager's pod, and it serves every RPC. Agents come
// through the Service, which every pod can reach, so that endpoint serves only what agents call,
// and only to agent sessions: a pod cannot list sessions, read the environments of intercepted
// containers, intercept, or act for a client.

// agentMethods are the RPCs of the agents' endpoint.
var agentMethods = map[string]bool{
	managerv1.Manager_Version_FullMethodName:        true,
	managerv1.Manager_ArriveAgent_FullMethodName:    true,
	managerv1.Manager_Remain_FullMethodName:         true, // with an agent's session: its heartbeat
	managerv1.Manager_Depart_FullMethodName:         true, // with an agent's session
	managerv1.Manager_WatchAgent_FullMethodName:     true,
	managerv1.Manager_AgentTunnel_FullMethodName:    true,
	managerv1.Manager_ReportCounters_FullMethodName: true,
	managerv1.Manager_Accept_FullMethodName:         true, // with an agent's session
	healthpb.Health_Check_FullMethodName:            true, // the kubelet's probes
	healthpb.Health_Watch_FullMethodName:            true,
	healthpb.Health_List_FullMethodName:             true,
}

// AgentEndpointOptions are the server options of the agents' endpoint.
func (m *Manager) AgentEndpointOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.agentUnary),
		grpc.ChainStreamInterceptor(m.agentStream),
	}
}

func notForAgents(method string) error {
	return status.Errorf(codes.PermissionDenied,
		"%s is not served on the traffic-manager's Service: clients reach the manager through a port-forward", method)
}

func (m *Manager) agentUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !agentMethods[info.FullMethod] {
		return nil, notForAgents(info.FullMethod)
	}
	if r, ok := req.(*managerv1.SessionRequest); ok {
		if _, err := m.agentSession(r.GetSessionId()); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

func (m *Manager) agentStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !agentMethods[info.FullMethod] {
		return notForAgents(info.FullMethod)
	}
	if info.FullMethod == managerv1.Manager_Accept_FullMethodName {
		// Clients accept intercepted connections too, but not here.
		ss = &agentAccept{ServerStream: ss, m: m}
	}
	return handler(srv, ss)
}

// agentAccept checks that an Accept stream's first message names an agent's session.
type agentAccept struct {
	grpc.ServerStream
	m       *Manager
	checked bool
}

func (s *agentAccept) RecvMsg(msg any) error {
	if err := s.ServerStream.RecvMsg(msg); err != nil {
		return err
	}
	if s.checked {
		return nil
	}
	s.checked = true
	t, ok := msg.(*managerv1.TunnelMessage)
	if !ok {
		return status.Errorf(codes.Internal, "accept: unexpected %T", msg)
	}
	_, err := s.m.agentSession(t.GetAccept().GetSessionId())
	return err
}
