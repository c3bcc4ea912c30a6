// Command traffic-manager is teledock's in-cluster end: it serves client and agent sessions,
// tunnels, DNS and intercepts over gRPC, and the agent injector's admission webhook over HTTPS.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/cluster/direct"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/manager"
	"teledock.dev/teledock/internal/pprofserver"
	"teledock.dev/teledock/internal/version"
	"teledock.dev/teledock/tunnel"
)

// shutdownGrace bounds how long in-flight RPCs get after SIGTERM; it stays well inside the pod's
// default terminationGracePeriodSeconds (30s).
const shutdownGrace = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "traffic-manager:", err)
		os.Exit(1)
	}
}

type options struct {
	listen string // the agents' endpoint, behind the Service
	// clientListen is the clients' endpoint: on loopback, where port-forwards arrive.
	clientListen string
	// clientRawListen is the clients' framed tunnels' endpoint, beside clientListen; empty: none.
	clientRawListen string
	namespace       string
	agentImage      string
	kubeconfig      string // empty: in-cluster config
	resolvConf      string
	dnsServer       string
	logLevel        slog.Level
	// managerAddress is where agents reach the manager; empty: the chart's Service.
	managerAddress string
	// webhookListen is the admission webhook's HTTPS address; empty: no webhook.
	webhookListen string
	// webhookCertDir holds tls.crt and tls.key for the webhook.
	webhookCertDir string
	// directListen is the direct port's TLS address; empty: no direct transport.
	directListen string
	// directService is the NodePort Service that exposes the direct port.
	directService string
	// nodeName is the manager's node, whose addresses clients try first.
	nodeName string
}

// parseFlags reads flags, with defaults from the environment (the Deployment sets POD_NAMESPACE
// through the downward API, and AGENT_IMAGE, MANAGER_ADDRESS and the webhook's from the chart).
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("traffic-manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", envOr(getenv, "LISTEN_ADDRESS", ":8081"),
		"gRPC address of the agents' endpoint, behind the Service ($LISTEN_ADDRESS)")
	fs.StringVar(&o.clientListen, "client-listen", envOr(getenv, "CLIENT_LISTEN_ADDRESS", "127.0.0.1:8082"),
		"gRPC address of the clients' endpoint; keep it on loopback, where port-forwards arrive ($CLIENT_LISTEN_ADDRESS)")
	fs.StringVar(&o.clientRawListen, "client-raw-listen", envOr(getenv, "CLIENT_RAW_LISTEN_ADDRESS", "127.0.0.1:8084"),
		"address of the clients' framed tunnels (one port-forward stream per TCP flow); keep it on loopback; empty: none ($CLIENT_RAW_LISTEN_ADDRESS)")
	fs.StringVar(&o.namespace, "namespace", getenv("POD_NAMESPACE"), "the manager's namespace ($POD_NAMESPACE)")
	fs.StringVar(&o.agentImage, "agent-image", getenv("AGENT_IMAGE"), "traffic-agent image to inject ($AGENT_IMAGE)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "kubeconfig to use instead of the in-cluster config")
	fs.StringVar(&o.resolvConf, "resolv-conf", "/etc/resolv.conf", "resolv.conf giving the cluster domain and fallback DNS")
	fs.StringVar(&o.dnsServer, "dns-server", getenv("DNS_SERVER"), "cluster DNS ip:port, overriding kube-system/kube-dns ($DNS_SERVER)")
	fs.TextVar(&o.logLevel, "log-level", envLevel(getenv), "debug, info, warn or error ($LOG_LEVEL)")
	fs.StringVar(&o.managerAddress, "manager-address", getenv("MANAGER_ADDRESS"),
		"host:port at which injected agents reach the manager; default traffic-manager.NAMESPACE:8081 ($MANAGER_ADDRESS)")
	fs.StringVar(&o.webhookListen, "webhook-listen", getenv("WEBHOOK_LISTEN"),
		"HTTPS address of the agent injector webhook, e.g. :8443; empty: no webhook ($WEBHOOK_LISTEN)")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", envOr(getenv, "WEBHOOK_CERT_DIR", "/var/run/teledock/webhook-tls"),
		"directory with the webhook's tls.crt and tls.key ($WEBHOOK_CERT_DIR)")
	fs.StringVar(&o.directListen, "direct-listen", getenv("DIRECT_LISTEN"),
		"TLS address of the direct port for clients' tunnels, e.g. :8083; empty: none ($DIRECT_LISTEN)")
	fs.StringVar(&o.directService, "direct-service", envOr(getenv, "DIRECT_SERVICE", "traffic-manager-direct"),
		"NodePort Service that exposes the direct port ($DIRECT_SERVICE)")
	fs.StringVar(&o.nodeName, "node-name", getenv("NODE_NAME"), "the manager's node ($NODE_NAME)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.namespace == "" {
		return o, errors.New("no namespace: set POD_NAMESPACE or --namespace")
	}
	return o, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func envLevel(getenv func(string) string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(getenv("LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	stopProfiler, err := pprofserver.Start(getenv(pprofserver.Env), log)
	if err != nil {
		return err
	}
	defer stopProfiler()

	restCfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "teledock-traffic-manager/" + version.Version
	k8s, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	cfg := manager.Config{
		Version:             version.Version,
		AgentImage:          o.agentImage,
		Namespace:           o.namespace,
		DNSServer:           o.dnsServer,
		AgentManagerAddress: o.managerAddress,
	}
	if f, err := os.Open(o.resolvConf); err != nil {
		log.Warn("no resolv.conf: cluster domain defaults to cluster.local", "error", err)
	} else {
		cfg.ResolvConf, err = manager.ParseResolvConf(f)
		f.Close()
		if err != nil {
			return err
		}
	}

	var ls listeners
	if ls.grpc, err = net.Listen("tcp", o.listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if ls.client, err = net.Listen("tcp", o.clientListen); err != nil {
		ls.grpc.Close()
		return fmt.Errorf("client listen: %w", err)
	}
	if o.clientRawListen != "" {
		if ls.clientRaw, err = net.Listen("tcp", o.clientRawListen); err != nil {
			ls.grpc.Close()
			ls.client.Close()
			return fmt.Errorf("client raw listen: %w", err)
		}
	}
	if o.webhookListen != "" {
		if ls.certs, err = newCertFiles(o.webhookCertDir); err != nil {
			return err
		}
		if ls.webhook, err = net.Listen("tcp", o.webhookListen); err != nil {
			return fmt.Errorf("webhook listen: %w", err)
		}
	}
	if o.directListen != "" {
		if ls.directTLS, cfg.Direct, err = newDirectTLS(o.directService, o.namespace); err != nil {
			return err
		}
		cfg.Direct.NodeName = o.nodeName
		if ls.direct, err = net.Listen("tcp", o.directListen); err != nil {
			return fmt.Errorf("direct listen: %w", err)
		}
	}
	log.Info("traffic-manager starting", "version", version.Version, "listen", ls.grpc.Addr().String(),
		"clientListen", ls.client.Addr().String(), "direct", o.directListen,
		"webhook", o.webhookListen, "namespace", o.namespace, "agentImage", o.agentImage)
	return serve(ctx, ls, cfg, k8s, log)
}

// listeners are what serve serves on; webhook is nil without a webhook, direct without the direct
// transport (and then cfg.Direct is nil too).
type listeners struct {
	grpc      net.Listener // agents
	client    net.Listener // clients, through port-forwards
	clientRaw net.Listener // clients' framed tunnels, through port-forwards; nil: none
	webhook   net.Listener
	certs     *certFiles
	direct    net.Listener // clients' tunnels, through a NodePort
	directTLS *tls.Config
}

// client-go's default limit (5 requests/s, bursts of 10) is for controllers that loop; an intercept
// makes about 15 requests (workload, services, configs, pods, endpoints, the env's sources), so
// back-to-back intercepts waited ~1.3 s on the limiter (make bench, re-intercept).
const (
	apiQPS   = 50
	apiBurst = 100
)

func restConfig(kubeconfig string) (*rest.Config, error) {
	var c *rest.Config
	var err error
	if kubeconfig == "" {
		if c, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster config (use --kubeconfig outside a cluster): %w", err)
		}
	} else if c, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	c.QPS, c.Burst = apiQPS, apiBurst
	return c, nil
}

// serve runs the gRPC server, and the webhook when it has a listener, until ctx ends, then shuts
// down: health turns NOT_SERVING, the webhook stops, sessions end (which ends their tunnels),
// and in-flight RPCs get shutdownGrace to finish.
func serve(ctx context.Context, ls listeners, cfg manager.Config, k8s kubernetes.Interface, log *slog.Logger) error {
	m, err := manager.New(cfg, k8s, log)
	if err != nil {
		return err
	}
	var web *http.Server
	if ls.webhook != nil {
		wlog := log.With("component", "webhook")
		h, err := inject.NewAdmissionHandler(wlog, m.AgentConfigs(), cfg.Namespace)
		if err != nil {
			return err
		}
		web = webhookServer(h, ls.certs, wlog)
	}
	hs := health.NewServer()
	gs := grpc.NewServer(append(tunnel.ServerOptions(), m.AgentEndpointOptions()...)...)
	managerv1.RegisterManagerServer(gs, m)
	healthpb.RegisterHealthServer(gs, hs)
	cs := grpc.NewServer(tunnel.ServerOptions()...)
	managerv1.RegisterManagerServer(cs, m)
	healthpb.RegisterHealthServer(cs, hs)
	var ds *grpc.Server
	var mux *direct.Mux
	if ls.direct != nil {
		if ds, mux, err = directServer(m, ls.direct, ls.directTLS, log); err != nil {
			return err
		}
		managerv1.RegisterManagerServer(ds, m)
		healthpb.RegisterHealthServer(ds, hs)
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		m.Run(runCtx)
	}()
	serveErr := make(chan error, 6)
	go func() {
		if err := gs.Serve(ls.grpc); err != nil {
			serveErr <- fmt.Errorf("grpc serve: %w", err)
		}
	}()
	go func() {
		if err := cs.Serve(ls.client); err != nil {
			serveErr <- fmt.Errorf("grpc serve (clients): %w", err)
		}
	}()
	if ls.clientRaw != nil {
		go func() {
			if err := m.ServeFramed(runCtx, ls.clientRaw); err != nil {
				serveErr <- fmt.Errorf("framed tunnels: %w", err)
			}
		}()
	}
	if ds != nil {
		go func() {
			if err := mux.Serve(runCtx); err != nil {
				serveErr <- fmt.Errorf("direct port: %w", err)
			}
		}()
		go func() {
			if err := ds.Serve(mux.GRPC()); err != nil {
				serveErr <- fmt.Errorf("direct serve: %w", err)
			}
		}()
	}
	if web != nil {
		go func() {
			if err := web.ServeTLS(ls.webhook, "", ""); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("webhook serve: %w", err)
			}
		}()
	}

	select {
	case err = <-serveErr:
	case <-ctx.Done():
		log.Info("shutting down")
	}

	hs.Shutdown()
	if web != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		web.Shutdown(sctx)
		cancel()
	}
	if ls.clientRaw != nil {
		_ = ls.clientRaw.Close()
	}
	stopRun() // ends every session, and with them every tunnel
	<-runDone
	servers := []*grpc.Server{gs, cs}
	if ds != nil {
		servers = append(servers, ds)
	}
	stopped := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(s.GracefulStop)
		}
		wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		log.Warn("RPCs still running after the grace period; stopping hard")
		for _, s := range servers {
			s.Stop()
		}
		<-stopped
	}
	return err
}
