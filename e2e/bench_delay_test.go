//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"teledock.dev/teledock/e2e/pattern"
)

// apiServerAddr is host:port of the current context's API server in kubeconfig.
func apiServerAddr(t testing.TB, kubeconfig string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, ok := kc.Contexts[kc.CurrentContext]
	if !ok {
		t.Fatalf("kubeconfig %s has no current context", kubeconfig)
	}
	u, err := url.Parse(kc.Clusters[ctx.Cluster].Server)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// kubeconfigVia writes a copy of kubeconfig whose clusters are reached at addr (host:port),
// keeping the scheme and the certificates: the API server's certificate names 127.0.0.1 and
// host.docker.internal, so TLS still verifies through a proxy on either.
func kubeconfigVia(t testing.TB, kubeconfig, addr string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range kc.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = addr
		c.Server = u.String()
	}
	f := t.TempDir() + "/kubeconfig"
	if err := clientcmd.WriteToFile(*kc, f); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkDelayProxy proves the delay proxy does what the scenario needs: a round trip through it
// takes 2*oneWay, a stream comes out intact and in order, half-close passes through, and it
// carries far more than the paths it slows down. It returns a line for the table's notes.
func checkDelayProxy(t *testing.T, oneWay time.Duration) string {
	t.Helper()
	// The upstream echoes everything and half-closes after the client did.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	proxy := startDelayProxy(t, "127.0.0.1:0", ln.Addr().String(), oneWay)
	defer proxy.close()
	dial := func() *net.TCPConn {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(proxy.port()))
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.TCPConn)
	}

	// Round trips of one byte.
	c := dial()
	rtts := make([]time.Duration, 20)
	one := []byte{1}
	for i := range rtts {
		start := time.Now()
		if _, err := c.Write(one); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			t.Fatal(err)
		}
		rtts[i] = time.Since(start)
	}
	c.Close()
	slices.Sort(rtts)
	rtt := rtts[len(rtts)/2]
	if rtt < 2*oneWay || rtt > 2*oneWay+10*time.Millisecond {
		t.Fatalf("delay proxy: round trip %s, want about %s", rtt, 2*oneWay)
	}

	// A stream echoed through the proxy, both directions at once.
	const n = 256 << 20
	c = dial()
	defer c.Close()
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, &pattern.Reader{}, n)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := pattern.Hasher()
	got, err := io.Copy(h, c) // ends at the echo's half-close
	elapsed := time.Since(start)
	if err != nil || got != n {
		t.Fatalf("delay proxy: echoed %d of %d bytes: %v", got, n, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("delay proxy: write: %v", err)
	}
	if h.Sum() != pattern.SHA256(n) {
		t.Fatal("delay proxy: the echoed stream differs from what was sent")
	}
	return fmt.Sprintf("Proxy self-check: round trip %s (want %s); %d MiB echoed through it intact at %.0f MB/s each way at once.",
		ms(rtt), 2*oneWay, n>>20, float64(n)/elapsed.Seconds()/1e6)
}
