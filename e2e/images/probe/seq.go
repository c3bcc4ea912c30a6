package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// httpSeq sends one GET per item on a single HTTP/1.1 keep-alive connection, as a client of a
// personally intercepted service would, and prints for each the first line of the body (or
// "HTTP <status>" when it is not 2xx), then "connections N": how many connections it took.
// An item is PATH, or PATH;NAME=VALUE to send the header NAME: VALUE.
func httpSeq(ctx context.Context, base string, items []string) error {
	var dials atomic.Int32
	tr := &http.Transport{
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, item := range items {
		path, hdr, _ := strings.Cut(item, ";")
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+path, nil)
		if err != nil {
			return err
		}
		if hdr != "" {
			name, value, ok := strings.Cut(hdr, "=")
			if !ok {
				return fmt.Errorf("item %q: the header is not NAME=VALUE", item)
			}
			req.Header.Set(name, value)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", item, err)
		}
		br := bufio.NewReader(resp.Body)
		line, _ := br.ReadString('\n')
		// Read to the end so that the connection is reused for the next item.
		_, _ = io.Copy(io.Discard, br)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			line = "HTTP " + resp.Status
		}
		fmt.Println(strings.TrimSpace(line))
	}
	fmt.Printf("connections %d\n", dials.Load())
	return nil
}

// grpcSeq calls grpc.health.v1.Health/Check once per item on one gRPC connection (h2c) and
// prints for each the x-echo-text response header: who answered. An item is "-" for no metadata
// or NAME=VALUE to send that metadata (an HTTP/2 header).
func grpcSeq(ctx context.Context, addr string, items []string) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for _, item := range items {
		cctx := ctx
		if item != "-" {
			name, value, ok := strings.Cut(item, "=")
			if !ok {
				return fmt.Errorf("item %q: not NAME=VALUE", item)
			}
			cctx = metadata.AppendToOutgoingContext(ctx, name, value)
		}
		var header metadata.MD
		if _, err := health.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header)); err != nil {
			return fmt.Errorf("check %s: %w", item, err)
		}
		who := header.Get("x-echo-text")
		if len(who) == 0 {
			return errors.New("the answer has no x-echo-text header")
		}
		fmt.Println(who[0])
	}
	return nil
}
