// Command echo is the test and demo workload: an HTTP server that says who answered, serves and
// checks bulk bodies, a UDP echo and, with GRPC_PORT, a gRPC health service that says who
// answered in its x-echo-text header, so tests can tell exactly which process answered a request.
// With LOG_REQUESTS set it logs every HTTP request and gRPC call ("request ..." lines).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"teledock.dev/teledock/e2e/pattern"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	httpAddr := ":" + envOr("PORT", "8080")
	udpAddr := ":" + envOr("UDP_PORT", "8081")
	host, _ := os.Hostname()
	text := envOr("ECHO_TEXT", "echo")

	go func() {
		if err := serveUDP(udpAddr, text); err != nil {
			log.Error("udp", "err", err)
			os.Exit(1)
		}
	}()

	logRequests := os.Getenv("LOG_REQUESTS") != ""
	if port := os.Getenv("GRPC_PORT"); port != "" {
		go func() {
			if err := serveGRPC(":"+port, text+" from "+host, logRequests, log); err != nil {
				log.Error("grpc", "err", err)
				os.Exit(1)
			}
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s\n", text, host)
	})
	// GET /who/... answers like GET /, for path-filtered intercepts.
	mux.HandleFunc("GET /who/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s\n", text, host)
	})
	// GET /bytes?n=N streams N bytes of a fixed pattern (for download tests and benchmarks).
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, &pattern.Reader{}, n)
	})
	// POST /sha256 answers with the hex SHA-256 of the body and its length (for upload tests).
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
	})
	// GET /static?n=N and POST /discard are the benchmarks' source and sink: a fixed buffer out,
	// bytes counted and dropped in, so a bench row measures the path and not the app's checksums.
	static := make([]byte, 256<<10)
	mux.HandleFunc("GET /static", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			m, err := w.Write(static[:min(n, int64(len(static)))])
			if err != nil {
				return
			}
			n -= int64(m)
		}
	})
	mux.HandleFunc("POST /discard", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 256<<10)
		var n int64
		for {
			m, err := r.Body.Read(buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, os.Getenv(r.PathValue("name")))
	})
	log.Info("listening", "http", httpAddr, "udp", udpAddr)
	var handler http.Handler = mux
	if logRequests {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			log.Info("request", "method", r.Method, "uri", r.RequestURI, "x-dev", r.Header.Get("x-dev"))
			mux.ServeHTTP(w, r)
		})
	}
	if err := http.ListenAndServe(httpAddr, handler); err != nil {
		log.Error("http", "err", err)
		os.Exit(1)
	}
}

// serveGRPC serves the gRPC health service on addr; every answer carries who in its x-echo-text
// header.
func serveGRPC(addr, who string, logRequests bool, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if logRequests {
			md, _ := metadata.FromIncomingContext(ctx)
			log.Info("request", "method", info.FullMethod, "x-dev", strings.Join(md.Get("x-dev"), ","))
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-text", who))
		return handler(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	return srv.Serve(l)
}

// serveUDP answers every datagram with "<text>: <datagram>".
func serveUDP(addr, text string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen udp: %w", err)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("read udp: %w", err)
		}
		reply := append([]byte(text+": "), buf[:n]...)
		if _, err := pc.WriteTo(reply, from); err != nil {
			return fmt.Errorf("write udp: %w", err)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
