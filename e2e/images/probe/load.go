package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// load opens n TCP connections to the host of rawURL, all at once: every connection is made
// before any of them sends its GET, so n are open together; then each GETs the URL's path and
// reads the answer, which must start with want when it is not empty. It prints "N ok, M failed"
// and the first failures, and fails when any did.
func load(ctx context.Context, rawURL string, n int, want string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	var (
		connected sync.WaitGroup // every connection made (or failed)
		done      sync.WaitGroup
		mu        sync.Mutex
		failures  []string
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err.Error())
		mu.Unlock()
	}
	allOpen := make(chan struct{})
	connected.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", host)
			connected.Done()
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			context.AfterFunc(ctx, func() { c.Close() })
			<-allOpen
			if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, u.Host); err != nil {
				fail(err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				fail(err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				fail(err)
			case resp.StatusCode != http.StatusOK:
				fail(fmt.Errorf("GET: %s", resp.Status))
			case !strings.HasPrefix(string(body), want):
				fail(fmt.Errorf("answered %q, want %q...", body, want))
			}
		}()
	}
	connected.Wait()
	close(allOpen)
	done.Wait()
	fmt.Printf("%d ok, %d failed\n", n-len(failures), len(failures))
	if len(failures) > 0 {
		for _, f := range failures[:min(len(failures), 5)] {
			fmt.Println(" ", f)
		}
		return errors.New("some connections failed")
	}
	return nil
}
