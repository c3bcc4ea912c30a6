package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// The fake parties' session ids.
const (
	agentSession  = "agent-1"
	clientSession = "client-1"
)

// pairService serves AgentTunnel, WatchDials and Accept with a Broker, the way the manager does
// minus sessions: every AgentTunnel is offered to clientSession.
type pairService struct {
	managerv1.UnimplementedManagerServer
	b     *Broker
	dials chan *managerv1.IncomingDial
	// life, when set, is the initiator's session.
	life context.Context
	// notifyErr, when set, fails the notification.
	notifyErr error
}

func (s *pairService) AgentTunnel(stream managerv1.Manager_AgentTunnelServer) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	return grpcError(s.b.Initiate(stream, Offer{
		Dial:     m.GetDial(),
		Acceptor: clientSession,
		Life:     s.life,
		Notify: func(d *managerv1.IncomingDial) error {
			if s.notifyErr != nil {
				return s.notifyErr
			}
			s.dials <- d
			return nil
		},
	}))
}

func (s *pairService) WatchDials(_ *managerv1.SessionRequest, stream managerv1.Manager_WatchDialsServer) error {
	for {
		select {
		case d := <-s.dials:
			if err := stream.Send(d); err != nil {
				s.dials <- d // for the next watcher, as the manager does
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (s *pairService) Accept(stream managerv1.Manager_AcceptServer) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	a := m.GetAccept()
	return grpcError(s.b.Accept(stream, a.GetSessionId(), a.GetConnId(), nil))
}

// grpcError stands in for the manager's mapping, so that tests can tell errors apart by code.
func grpcError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnknownConn):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrWrongAcceptor):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrPeer):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, ErrProtocol):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

type harness struct {
	client managerv1.ManagerClient
	broker *Broker
	svc    *pairService
}

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
}

func start(tb testing.TB, cfg Config, svc *pairService) *harness {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	return serve(tb, cfg, svc, lis, "passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
}

// startLoopback is start over loopback TCP instead of an in-memory pipe, for benchmarks.
func startLoopback(tb testing.TB, cfg Config, svc *pairService) *harness {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serve(tb, cfg, svc, lis, "passthrough:///"+lis.Addr().String())
}

// serve serves svc with the tunnel's options on lis and connects a client to target.
func serve(tb testing.TB, cfg Config, svc *pairService, lis net.Listener, target string, dopts ...grpc.DialOption) *harness {
	tb.Helper()
	b, err := New(cfg, testLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	svc.b = b
	svc.dials = make(chan *managerv1.IncomingDial, 16)
	gs := grpc.NewServer(tunnel.ServerOptions()...)
	managerv1.RegisterManagerServer(gs, svc)
	go gs.Serve(lis)
	dopts = append(append(dopts, tunnel.DialOptions()...), grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient(target, dopts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cc.Close()
		gs.Stop()
	})
	return &harness{client: managerv1.NewManagerClient(cc), broker: b, svc: svc}
}

// dialAgent opens an intercepted connection as an agent does.
func (h *harness) dialAgent(ctx context.Context) (*tunnel.Conn, error) {
	return tunnel.DialStream(ctx, func(ctx context.Context) (tunnel.ClientStream, error) { return h.client.AgentTunnel(ctx) },
		&managerv1.Dial{SessionId: agentSession, InterceptId: "icpt", TargetPort: 8080},
		"tcp", netip.MustParseAddrPort("10.244.0.7:8080"))
}

// acceptor is the client side of a paired connection in these tests.
type acceptor func(t *testing.T, s managerv1.Manager_AcceptClient, dial *managerv1.Dial)

// acceptOne waits for one IncomingDial, accepts it as session and runs behave. It returns when
// behave has returned and the stream has ended.
func (h *harness) acceptOne(t *testing.T, ctx context.Context, session string, behave acceptor) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	watch, err := h.client.WatchDials(ctx, &managerv1.SessionRequest{SessionId: session})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		d, err := watch.Recv()
		if err != nil {
			t.Errorf("WatchDials: %v", err)
			return
		}
		h.accept(t, ctx, session, d, behave)
	}()
	return done
}

// accept accepts the connection d offers as session and runs behave.
func (h *harness) accept(t *testing.T, ctx context.Context, session string, d *managerv1.IncomingDial, behave acceptor) {
	{
		if d.GetInterceptId() != "icpt" {
			t.Errorf("IncomingDial intercept %q, want icpt", d.GetInterceptId())
		}
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := h.client.Accept(actx)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		if err := s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: session, ConnId: d.GetConnId()}}}); err != nil {
			t.Errorf("send accept: %v", err)
			return
		}
		m, err := s.Recv()
		if err != nil {
			behave(t, s, nil)
			return
		}
		if m.GetDial() == nil {
			t.Errorf("acceptor's first message is %T, want the dial", m.GetMsg())
			return
		}
		behave(t, s, m.GetDial())
	}
}

func okResult() *managerv1.TunnelMessage {
	return &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}}
}

func data(p string, closeWrite bool) *managerv1.TunnelMessage {
	return &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &managerv1.Data{Payload: []byte(p), CloseWrite: closeWrite}}}
}

// echoAcceptor answers the dial, echoes every message, says "bye" and half-closes when the
// initiator does; then it waits for the stream's end, as a well-behaved acceptor does.
func echoAcceptor(t *testing.T, s managerv1.Manager_AcceptClient, dial *managerv1.Dial) {
	if dial.GetInterceptId() != "icpt" || dial.GetTargetPort() != 8080 || dial.GetAddress() != "10.244.0.7:8080" {
		t.Errorf("forwarded dial %v", dial)
	}
	if err := s.Send(okResult()); err != nil {
		t.Errorf("send result: %v", err)
		return
	}
	for {
		m, err := s.Recv()
		if err != nil {
			t.Errorf("acceptor recv: %v", err)
			return
		}
		d := m.GetData()
		if len(d.GetPayload()) > 0 {
			if err := s.Send(data(string(d.GetPayload()), false)); err != nil {
				t.Errorf("acceptor send: %v", err)
				return
			}
		}
		if d.GetCloseWrite() {
			break
		}
	}
	if err := s.Send(data("bye", true)); err != nil {
		t.Errorf("acceptor close write: %v", err)
	}
	s.CloseSend()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("acceptor's stream ended with %v, want EOF", err)
	}
}

// checkGoroutines fails the test if goroutines outlive it. Register it first so that its cleanup
// runs last.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func waitIdle(tb testing.TB, b *Broker) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.Active() != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("broker still serves %d streams", b.Active())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPairedConnection(t *testing.T) {
	checkGoroutines(t)
	h := start(t, Config{}, &pairService{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := h.acceptOne(t, ctx, clientSession, echoAcceptor)

	c, err := h.dialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"hello", "world"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(p))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != p {
			t.Fatalf("echo %q, %v", buf, err)
		}
	}
	// Half-close: the acceptor still sends after our close_write, then closes its side.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "bye" {
		t.Errorf("after close write: %q, %v", rest, err)
	}
	c.Close()
	<-done
	waitIdle(t, h.broker)
}

// TestBulk pushes more than the queues and windows hold through the pair, both ways at once.
func TestBulk(t *testing.T) {
	checkGoroutines(t)
	h := start(t, Config{}, &pairService{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := h.acceptOne(t, ctx, clientSession, echoAcceptor)
	c, err := h.dialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16) // 4 MiB
	var wg sync.WaitGroup
	wg.Go(func() {
		c.Write(want)
		c.CloseWrite()
	})
	got, err := io.ReadAll(c)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(want, "bye"...)) {
		t.Errorf("got %d bytes back, want %d", len(got), len(want)+3)
	}
	c.Close()
	<-done
	waitIdle(t, h.broker)
}

func TestRefusedAndUnanswered(t *testing.T) {
	tests := []struct {
		name   string
		behave acceptor
		want   error
	}{
		{
			name: "refused",
			behave: func(t *testing.T, s managerv1.Manager_AcceptClient, _ *managerv1.Dial) {
				res := &managerv1.DialResult{Error: "connect: connection refused", Reason: managerv1.DialError_DIAL_ERROR_REFUSED}
				s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: res}})
				s.CloseSend()
				if _, err := s.Recv(); !errors.Is(err, io.EOF) {
					t.Errorf("acceptor's stream ended with %v, want EOF", err)
				}
			},
			want: tunnel.ErrRefused,
		},
		{
			name: "no answer",
			behave: func(t *testing.T, s managerv1.Manager_AcceptClient, _ *managerv1.Dial) {
				s.CloseSend()
				if _, err := s.Recv(); !errors.Is(err, io.EOF) {
					t.Errorf("acceptor's stream ended with %v, want EOF", err)
				}
			},
			want: &tunnel.DialError{Reason: managerv1.DialError_DIAL_ERROR_UNSPECIFIED},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			h := start(t, Config{}, &pairService{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := h.acceptOne(t, ctx, clientSession, tt.behave)
			_, err := h.dialAgent(ctx)
			var de *tunnel.DialError
			switch want := tt.want.(type) {
			case *tunnel.DialError:
				if !errors.As(err, &de) || de.Reason != want.Reason {
					t.Errorf("dial: %v, want a DialError with reason %v", err, want.Reason)
				}
			default:
				if !errors.Is(err, tt.want) {
					t.Errorf("dial: %v, want %v", err, tt.want)
				}
			}
			<-done
			waitIdle(t, h.broker)
		})
	}
}

func TestNotAccepted(t *testing.T) {
	tests := []struct {
		name      string
		notifyErr error
		want      error
		within    time.Duration
	}{
		{"nobody accepts", nil, tunnel.ErrTimeout, 2 * time.Second},
		{"acceptor unreachable", errors.New("no such session"), tunnel.ErrUnreachable, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			h := start(t, Config{AcceptTimeout: 300 * time.Millisecond}, &pairService{notifyErr: tt.notifyErr})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			began := time.Now()
			_, err := h.dialAgent(ctx)
			if !errors.Is(err, tt.want) {
				t.Errorf("dial: %v, want %v", err, tt.want)
			}
			if d := time.Since(began); d > tt.within {
				t.Errorf("refused after %v, want within %v", d, tt.within)
			}
			// A late Accept finds nothing.
			if tt.notifyErr == nil {
				d := <-h.svc.dials
				if h.broker.Waiting(d.GetConnId()) {
					t.Error("connection still waiting after its timeout")
				}
				s, err := h.client.Accept(ctx)
				if err != nil {
					t.Fatal(err)
				}
				s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: clientSession, ConnId: d.GetConnId()}}})
				if _, err := s.Recv(); status.Code(err) != codes.NotFound {
					t.Errorf("late accept: %v, want NotFound", err)
				}
			}
			waitIdle(t, h.broker)
		})
	}
}

func TestWrongAcceptor(t *testing.T) {
	checkGoroutines(t)
	h := start(t, Config{AcceptTimeout: 2 * time.Second}, &pairService{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		d := <-h.svc.dials
		s, err := h.client.Accept(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		s.Send(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Accept{Accept: &managerv1.Accept{SessionId: "intruder", ConnId: d.GetConnId()}}})
		if _, err := s.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("accept by another session: %v, want PermissionDenied", err)
		}
		// The rightful acceptor still gets it.
		h.svc.dials <- d
	}()
	done := h.acceptOne(t, ctx, clientSession, echoAcceptor)
	c, err := h.dialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Errorf("read %q, %v", b, err)
	}
	c.Close()
	<-done
	waitIdle(t, h.broker)
}

// TestFailures checks that a failure of either party, or of the initiator's session, ends both
// streams with an error.
func TestFailures(t *testing.T) {
	tests := []struct {
		name string
		// acceptorFails makes the acceptor reset after the dial; otherwise the test breaks the
		// initiator's side with breakInitiator.
		acceptorFails  bool
		breakInitiator func(c *tunnel.Conn, endLife context.CancelCauseFunc)
		wantInitiator  codes.Code // the code the initiator's Read sees
		wantAcceptor   codes.Code // the code the acceptor's Recv sees
	}{
		{
			name:          "acceptor resets",
			acceptorFails: true,
			wantInitiator: codes.Aborted,
		},
		{
			name:           "initiator resets",
			breakInitiator: func(c *tunnel.Conn, _ context.CancelCauseFunc) { c.Close() },
			wantAcceptor:   codes.Aborted,
		},
		{
			name: "initiator's session ends",
			breakInitiator: func(_ *tunnel.Conn, endLife context.CancelCauseFunc) {
				endLife(status.Error(codes.NotFound, "session expired"))
			},
			wantInitiator: codes.NotFound,
			wantAcceptor:  codes.Aborted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			life, endLife := context.WithCancelCause(context.Background())
			defer endLife(nil)
			h := start(t, Config{}, &pairService{life: life})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			accepted, dialed := make(chan struct{}), make(chan struct{})
			done := h.acceptOne(t, ctx, clientSession, func(t *testing.T, s managerv1.Manager_AcceptClient, _ *managerv1.Dial) {
				s.Send(okResult())
				close(accepted)
				if tt.acceptorFails {
					select {
					case <-dialed:
					case <-ctx.Done():
					}
					return // acceptOne cancels the stream
				}
				for {
					_, err := s.Recv()
					if err != nil {
						if status.Code(err) != tt.wantAcceptor {
							t.Errorf("acceptor: %v, want %v", err, tt.wantAcceptor)
						}
						return
					}
				}
			})
			c, err := h.dialAgent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			close(dialed)
			<-accepted
			if tt.breakInitiator != nil {
				tt.breakInitiator(c, endLife)
			}
			if tt.wantInitiator != codes.OK {
				_, err := c.Read(make([]byte, 1))
				if status.Code(err) != tt.wantInitiator {
					t.Errorf("initiator: %v, want %v", err, tt.wantInitiator)
				}
			}
			<-done
			waitIdle(t, h.broker)
		})
	}
}

// TestProtocol checks that an acceptor sending data before its answer breaks the connection.
func TestProtocol(t *testing.T) {
	checkGoroutines(t)
	h := start(t, Config{}, &pairService{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := h.acceptOne(t, ctx, clientSession, func(t *testing.T, s managerv1.Manager_AcceptClient, _ *managerv1.Dial) {
		s.Send(data("early", false))
		if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("acceptor: %v, want InvalidArgument", err)
		}
	})
	if _, err := h.dialAgent(ctx); status.Code(err) != codes.Aborted {
		t.Errorf("dial: %v, want Aborted", err)
	}
	<-done
	waitIdle(t, h.broker)
}

// TestAcceptorCancelsWhenDone checks that an acceptor that cancels its stream once the manager
// has everything it sent and it has everything it is owed (here: it got the initiator's
// close_write, which the initiator sends after reading all) leaves the initiator a clean end.
//
// Cancelling earlier can lose data: gRPC may deliver a cancel before messages that preceded it.
// Acceptors should CloseSend and wait for the stream's end instead.
func TestAcceptorCancelsWhenDone(t *testing.T) {
	checkGoroutines(t)
	h := start(t, Config{}, &pairService{})
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := make(chan struct{})
		// Straight from the service's queue: a WatchDials per round would race with the
		// previous round's, still being cancelled, for the IncomingDial.
		go func() {
			defer close(done)
			h.accept(t, ctx, clientSession, <-h.svc.dials, func(t *testing.T, s managerv1.Manager_AcceptClient, _ *managerv1.Dial) {
				s.Send(okResult())
				s.Send(data("all", true))
				for {
					m, err := s.Recv()
					if err != nil || m.GetData().GetCloseWrite() {
						return // accept cancels the stream at once
					}
				}
			})
		}()
		c, err := h.dialAgent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "all" {
			t.Errorf("round %d: read %q, %v", i, b, err)
		}
		c.CloseWrite()
		c.Close()
		<-done
		cancel()
	}
	waitIdle(t, h.broker)
}
