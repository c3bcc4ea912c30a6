package tunnel

import (
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// tunnelService serves only the Tunnel RPC, with a tunnel Server.
type tunnelService struct {
	managerv1.UnimplementedManagerServer
	srv *Server
}

func (t *tunnelService) Tunnel(s managerv1.Manager_TunnelServer) error { return t.srv.Serve(s) }

// optionVariant is a set of gRPC options to measure against DialOptions/ServerOptions.
type optionVariant struct {
	name   string
	client []grpc.DialOption
	server []grpc.ServerOption
}

type harness struct {
	client managerv1.ManagerClient
	server *Server
}

type harnessOpts struct {
	cfg  ServerConfig
	dial DialFunc // default: a net.Dialer
	// grpc, when set, replaces DialOptions and ServerOptions (an empty variant means gRPC's defaults).
	grpc *optionVariant
	// tls puts TLS (tunnel.TLS, as on the direct port) under gRPC.
	tls bool
	// wrap, when set, sits between the client and the gRPC server (e.g. a delaying proxy) and
	// returns the address the client dials.
	wrap func(tb testing.TB, addr string) string
}

// startHarness runs a real gRPC server on a loopback listener and a client connected to it.
func startHarness(tb testing.TB, o harnessOpts) *harness {
	tb.Helper()
	if o.dial == nil {
		o.dial = (&net.Dialer{}).DialContext
	}
	srv, err := NewServer(o.cfg, o.dial, testLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var sopts []grpc.ServerOption
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if o.grpc == nil {
		sopts = ServerOptions()
		dopts = append(dopts, DialOptions()...)
	} else {
		sopts = o.grpc.server
		dopts = append(dopts, o.grpc.client...)
	}
	if o.tls {
		clientCfg, serverCfg := testTLSConfigs(tb)
		sopts = append(sopts, grpc.Creds(TLS(serverCfg)))
		dopts[0] = grpc.WithTransportCredentials(TLS(clientCfg))
	}
	gs := grpc.NewServer(sopts...)
	managerv1.RegisterManagerServer(gs, &tunnelService{srv: srv})
	go gs.Serve(lis)

	addr := lis.Addr().String()
	if o.wrap != nil {
		addr = o.wrap(tb, addr)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, dopts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cc.Close()
		gs.Stop()
	})
	return &harness{client: managerv1.NewManagerClient(cc), server: srv}
}

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("TELEDOCK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
}

// listenTCP runs handle for every connection accepted on a loopback listener.
func listenTCP(tb testing.TB, handle func(*net.TCPConn)) *net.TCPListener {
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return lis
}

// waitIdle waits until the server serves no tunnel, failing after a few seconds.
func waitIdle(tb testing.TB, s *Server) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Active() != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("server still serves %d tunnels", s.Active())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkGoroutines fails the test if, after its cleanups, more goroutines run than before it.
// Register it first so that its cleanup runs last.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				tb.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// delayProxy forwards TCP connections to target, delaying every chunk by oneWay in each direction,
// which emulates a link with an RTT of 2*oneWay (the build machines have no netem).
func delayProxy(oneWay time.Duration) func(tb testing.TB, target string) string {
	return func(tb testing.TB, target string) string {
		tb.Helper()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { lis.Close() })
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				u, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					continue
				}
				go delayCopy(u, c, oneWay)
				go delayCopy(c, u, oneWay)
			}
		}()
		return lis.Addr().String()
	}
}

func delayCopy(dst, src net.Conn, d time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{time.Now().Add(d), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	// Closing both ends also unblocks the reader, so the queue drains.
	dst.Close()
	src.Close()
	for range q {
	}
}
