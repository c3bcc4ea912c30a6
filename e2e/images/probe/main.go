// Command probe is the tests' client inside containers: it fetches URLs, dials TCP, sends UDP and
// resolves names with a deadline, and exits non-zero when it could not, so a test can assert both
// reachability and isolation from inside a container.
//
//	probe [-timeout 5s] http URL            print the body of a GET (2xx required)
//	probe [-timeout 5s] tcp HOST:PORT       connect and close
//	probe [-timeout 5s] h2 HOST:PORT        speak HTTP/2's client preface and require the server's
//	                                        SETTINGS (a gRPC server that accepts the connection)
//	probe [-timeout 5s] udp HOST:PORT MSG   send MSG, print the reply
//	probe [-timeout 5s] dns NAME [SERVER]   print the addresses of NAME
//	probe [-timeout 5s] load URL N [PREFIX] open N connections at once, then GET URL on each (and
//	                                        check that every answer starts with PREFIX)
//	probe [-timeout 5s] rdns IP             print the names of IP (reverse lookup)
//	probe [-timeout 5s] download URL        print "sha256 bytes" of a GET body
//	probe [-timeout 5s] upload URL N        POST N pattern bytes, print the reply
//	probe [-timeout 5s] [-transfer-time D] [-header NAME:VALUE] bench BASE BYTES N
//	                                        measure the echo app at BASE: download and upload BYTES
//	                                        (GET BASE/bytes, POST BASE/sha256), then N keep-alive GETs
//	                                        of BASE/ (with the header, if any); print the figures as
//	                                        one JSON object (bench.go)
//	probe [-timeout 5s] http-seq BASE ITEM...
//	                                        one GET per ITEM (PATH or PATH;NAME=VALUE for a header)
//	                                        on one keep-alive connection; print each body's first
//	                                        line, then "connections N" (seq.go)
//	probe [-timeout 5s] grpc-seq HOST:PORT ITEM...
//	                                        one health Check per ITEM ("-" or NAME=VALUE metadata) on
//	                                        one gRPC connection; print who answered (x-echo-text)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"teledock.dev/teledock/e2e/pattern"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 5*time.Second, "deadline for the whole probe")
	transferTime := flag.Duration("transfer-time", 0, "bench: stop each transfer after this long (0: never)")
	header := flag.String("header", "", "bench: NAME:VALUE header of the latency GETs")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, flag.Args(), benchOptions{transferTime: *transferTime, header: *header}); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, bo benchOptions) error {
	if len(args) < 2 {
		return errors.New("usage: probe cat|write|ls|http|tcp|udp|dns|download|upload|bench ARGS")
	}
	switch args[0] {
	case "cat":
		// For volume tests: what a container sees at a path.
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	case "load":
		// For load tests: N connections open at once, each with one GET.
		if len(args) != 3 && len(args) != 4 {
			return errors.New("usage: probe load URL N [BODY-PREFIX]")
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		want := ""
		if len(args) == 4 {
			want = args[3]
		}
		return load(ctx, args[1], n, want)
	case "write":
		// For volume tests: write CONTENT to a path (creating or truncating it).
		if len(args) != 3 {
			return errors.New("usage: probe write PATH CONTENT")
		}
		return os.WriteFile(args[1], []byte(args[2]), 0o644)
	case "fill":
		// For volume benchmarks: a file of N MiB of bytes that do not compress.
		if len(args) != 3 {
			return errors.New("usage: probe fill PATH MIB")
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		f, err := os.Create(args[1])
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		rng := rand.New(rand.NewPCG(1, 2))
		for range n {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
		}
		return f.Close()
	case "mkfiles":
		// For volume benchmarks: N small files in a folder.
		if len(args) != 3 {
			return errors.New("usage: probe mkfiles DIR N")
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		if err := os.MkdirAll(args[1], 0o755); err != nil {
			return err
		}
		for i := range n {
			if err := os.WriteFile(fmt.Sprintf("%s/f%04d", args[1], i), []byte("x"), 0o644); err != nil {
				return err
			}
		}
		return nil
	case "read":
		// For volume benchmarks: read a file to its end and say how many bytes in how long.
		start := time.Now()
		f, err := os.Open(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(io.Discard, f)
		if err != nil {
			return err
		}
		fmt.Printf("%d %s\n", n, time.Since(start))
		return nil
	case "ls":
		// For volume tests: how many entries a folder has, and how long listing it took.
		start := time.Now()
		entries, err := os.ReadDir(args[1])
		if err != nil {
			return err
		}
		fmt.Printf("%d %s\n", len(entries), time.Since(start))
		return nil
	case "http-seq":
		if len(args) < 3 {
			return errors.New("usage: probe http-seq BASE ITEM...")
		}
		return httpSeq(ctx, args[1], args[2:])
	case "grpc-seq":
		if len(args) < 3 {
			return errors.New("usage: probe grpc-seq HOST:PORT ITEM...")
		}
		return grpcSeq(ctx, args[1], args[2:])
	case "http":
		body, err := get(ctx, args[1])
		if err != nil {
			return err
		}
		defer body.Close()
		_, err = io.Copy(os.Stdout, body)
		return err
	case "tcp":
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", args[1])
		if err != nil {
			return err
		}
		return c.Close()
	case "h2":
		return h2Preface(ctx, args[1])
	case "udp":
		if len(args) < 3 {
			return errors.New("usage: probe udp HOST:PORT MSG")
		}
		return udp(ctx, args[1], args[2])
	case "dns":
		r := net.DefaultResolver
		if len(args) > 2 {
			server := args[2]
			r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, server)
			}}
		}
		addrs, err := r.LookupHost(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(addrs, "\n"))
		return nil
	case "rdns":
		names, err := net.DefaultResolver.LookupAddr(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(names, "\n"))
		return nil
	case "download":
		body, err := get(ctx, args[1])
		if err != nil {
			return err
		}
		defer body.Close()
		h := sha256.New()
		n, err := io.Copy(h, body)
		if err != nil {
			return err
		}
		fmt.Printf("%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
		return nil
	case "upload":
		if len(args) < 3 {
			return errors.New("usage: probe upload URL N")
		}
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return fmt.Errorf("byte count: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, args[1], io.LimitReader(&pattern.Reader{}, n))
		if err != nil {
			return err
		}
		req.ContentLength = n
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(os.Stdout, resp.Body)
		return err
	case "bench":
		if len(args) < 4 {
			return errors.New("usage: probe bench BASE BYTES N")
		}
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return fmt.Errorf("byte count: %w", err)
		}
		requests, err := strconv.Atoi(args[3])
		if err != nil {
			return fmt.Errorf("request count: %w", err)
		}
		res, err := bench(ctx, strings.TrimSuffix(args[1], "/"), n, requests, bo)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	return fmt.Errorf("unknown probe %q", args[0])
}

func get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

func udp(ctx context.Context, addr, msg string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// UDP may drop a datagram; resend until an answer or the deadline.
	buf := make([]byte, 65536)
	for {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			fmt.Println(string(buf[:n]))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from %s: %w", addr, err)
		}
	}
}

// h2Preface opens an HTTP/2 connection far enough to see that the server answers it: the client
// preface and an empty SETTINGS frame out, a SETTINGS frame (type 4) back.
func h2Preface(ctx context.Context, addr string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		return fmt.Errorf("write preface: %w", err)
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("no HTTP/2 answer: %w", err)
	}
	if hdr[3] != 4 {
		return fmt.Errorf("first frame has type %d, want SETTINGS (4)", hdr[3])
	}
	fmt.Println("settings")
	return nil
}
