package manager

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

// TestLiveManager talks to a deployed traffic-manager, e.g. through `kubectl port-forward
// svc/traffic-manager 8081`. It runs only when TELEDOCK_TEST_MANAGER names its address;
// TELEDOCK_TEST_ECHO ("ip", a pod running e2e/images/echo) adds HTTP and UDP checks and a 100 MiB
// download whose rate is logged.
func TestLiveManager(t *testing.T) {
	addr := os.Getenv("TELEDOCK_TEST_MANAGER")
	if addr == "" {
		t.Skip("set TELEDOCK_TEST_MANAGER to the address of a running traffic-manager")
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		append(tunnel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := managerv1.NewManagerClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s, err := client.ArriveClient(ctx, &managerv1.ClientInfo{Name: "live-test", Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	sid := s.GetSessionId()
	defer client.Depart(context.Background(), &managerv1.SessionRequest{SessionId: sid})
	info, err := client.ClusterInfo(ctx, &managerv1.SessionRequest{SessionId: sid})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster info: %v", info)

	answer, err := client.LookupDNS(ctx, &managerv1.DNSRequest{SessionId: sid,
		Query: query(0x77, "kubernetes.default.svc."+info.GetClusterDomain())})
	if err != nil {
		t.Fatal(err)
	}
	// One answer (ANCOUNT=1), ending with the kubernetes service's IPv4 address.
	if a := answer.GetAnswer(); len(a) < 16 || a[7] != 1 {
		t.Errorf("answer for kubernetes.default: %x", a)
	} else {
		t.Logf("kubernetes.default.svc = %v", netip.AddrFrom4([4]byte(a[len(a)-4:])))
	}

	echo := os.Getenv("TELEDOCK_TEST_ECHO")
	if echo == "" {
		return
	}
	ip := netip.MustParseAddr(echo)

	udp, err := tunnel.Dial(ctx, client, sid, "udp", netip.AddrPortFrom(ip, 8081))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udp.Write([]byte("hello"))
	buf := make([]byte, 1500)
	n, err := udp.Read(buf)
	t.Logf("udp echo: %q, %v", buf[:n], err)

	const size = 100 << 20
	start := time.Now()
	c, err := tunnel.Dial(ctx, client, sid, "tcp", netip.AddrPortFrom(ip, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("tcp dial took %v", time.Since(start))
	start = time.Now()
	fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.0\r\nHost: echo\r\n\r\n", size)
	c.CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != size {
		t.Fatalf("read %d of %d bytes: %v", got, size, err)
	}
	d := time.Since(start)
	t.Logf("downloaded %d MiB through the port-forward in %v: %.0f MB/s", size>>20, d.Round(time.Millisecond),
		float64(size)/d.Seconds()/1e6)

	// Upload: POST /sha256 answers "HEX LEN".
	c2, err := tunnel.Dial(ctx, client, sid, "tcp", netip.AddrPortFrom(ip, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	start = time.Now()
	fmt.Fprintf(c2, "POST /sha256 HTTP/1.0\r\nHost: echo\r\nContent-Length: %d\r\n\r\n", size)
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	for range size / len(chunk) {
		if _, err := c2.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	c2.CloseWrite()
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	d = time.Since(start)
	if !bytes.HasSuffix(bytes.TrimSpace(body), []byte(" "+strconv.Itoa(size))) {
		t.Errorf("upload answer %q", body)
	}
	t.Logf("uploaded %d MiB through the port-forward in %v: %.0f MB/s", size>>20, d.Round(time.Millisecond),
		float64(size)/d.Seconds()/1e6)
}
