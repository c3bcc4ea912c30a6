//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Personal intercepts: two developers, each with their own connection (daemon and session),
// intercept one port of one workload with different HTTP filters. Requests of one keep-alive
// connection from a pod go to whichever developer's filter they match, the rest to the app;
// the same over gRPC; a wiretap gets copies while the app answers; overlapping filters are
// refused. Subtests run in order; each leaves what the next expects, as the comments say.
func TestHTTPFilter(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "httpfilter.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/filtered", "--timeout=120s"), "rollout of filtered")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	alice := connect(t, ns)
	bob := connectAs(t, ns, connName(t, "-bob"))
	ia, ib := interceptor{t: t, ns: ns, conn: alice}, interceptor{t: t, ns: ns, conn: bob}
	aliceText, _ := filterHandler(t, ns, alice, "h-alice", 8101, 9101)
	bobText, _ := filterHandler(t, ns, bob, "h-bob", 8102, 9102)
	const app = "cluster filtered from filtered-"

	t.Run("header filters split one keep-alive connection", func(t *testing.T) {
		out := ia.intercept("alice", "-w", "filtered", "--port", "8101:http", "--http-header", "x-dev=alice")
		wantBlock(t, out, "Using Deployment filtered", map[string]string{
			"Intercept name": "alice", "State": "ACTIVE", "Destination": "127.0.0.1:8101",
			"Intercepting": "HTTP requests that match the filter", "HTTP filter": "header x-dev=alice",
		})
		ib.intercept("bob", "-w", "filtered", "--port", "8102:http", "--http-header", "x-dev=bob")
		wantSeq(t, ns, "http://filtered",
			[]string{"/;x-dev=alice", "/", "/;x-dev=bob", "/;x-dev=alice", "/;x-dev=carol", "/;x-dev=bob", "/"},
			[]string{aliceText, app, bobText, aliceText, app, bobText, app})

		list := must(t, teledock(t, "list", "--name", alice), "list")
		for _, re := range []string{`HTTP filter\s*: header x-dev=alice`, `HTTP filter\s*: header x-dev=bob`, `Intercept name\s*: bob`} {
			if !regexp.MustCompile(re).MatchString(list) {
				t.Errorf("list lacks %s:\n%s", re, list)
			}
		}
		// Agents report their counters every few seconds. They count requests, not connections:
		// the sequence sent alice two requests on one connection, so at least 2.
		eventually(t, 30*time.Second, "status counts alice's requests", func() error {
			st := must(t, teledock(t, "status", "--name", alice), "status")
			if !regexp.MustCompile(`(?m)^\s+alice: \S+ \(HTTP filter header x-dev=alice; ([2-9]|[1-9]\d+) requests\)$`).MatchString(st) {
				return fmt.Errorf("status:\n%s", st)
			}
			return nil
		})
	})

	t.Run("gRPC calls by their metadata", func(t *testing.T) {
		ia.intercept("alice-grpc", "-w", "filtered", "--port", "9101:grpc", "--http-header", "x-dev=alice")
		ib.intercept("bob-grpc", "-w", "filtered", "--port", "9102:grpc", "--http-header", "x-dev=bob")
		items := []string{"x-dev=alice", "-", "x-dev=bob", "x-dev=alice", "-"}
		want := []string{aliceText, app, bobText, aliceText, app}
		eventually(t, 90*time.Second, "gRPC calls of one connection reach alice, the app and bob", func() error {
			r := fromCluster(t, ns, append([]string{"grpc-seq", "filtered:9000"}, items...)...)
			if r.err != nil {
				return fmt.Errorf("%v: %s", r.err, r.stderr)
			}
			return matchLines(strings.Split(strings.TrimSpace(r.stdout), "\n"), want)
		})
	})

	// alice and bob still intercept the HTTP port.
	t.Run("overlapping and invalid filters are refused", func(t *testing.T) {
		for _, c := range []struct {
			name string
			args []string
			want []string
		}{
			// The same literal value as alice's (the header's name in other case): it overlaps
			// hers only, so the refusal names her (a pattern would overlap bob's too, and which
			// one a refusal names is not fixed).
			{"overlapping header", []string{"--http-header", "X-Dev=alice"}, []string{`intercept "alice"`, "could match together"}},
			{"overlapping pattern", []string{"--http-header", "x-dev=a.*"}, []string{`intercept "`, "could match together"}},
			{"no filter", nil, []string{`intercept "`, "without --http-header"}},
		} {
			r := teledock(t, append([]string{"intercept", "bob-more", "-w", "filtered", "--port", "8103:http", "--name", bob}, c.args...)...)
			if r.err == nil {
				t.Errorf("%s: accepted", c.name)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("%s: stderr lacks %q:\n%s", c.name, w, r.stderr)
				}
			}
			if exitCode(r.err) != 6 {
				t.Errorf("%s: exit code %d, want 6 (intercept conflict)", c.name, exitCode(r.err))
			}
		}
		for _, c := range []struct {
			name string
			args []string
			want string
		}{
			{"two path flags", []string{"--http-path-equal", "/a", "--http-path-prefix", "/b"}, "at most one of"},
			{"not NAME=VALUE", []string{"--http-header", "x-dev"}, "want NAME=VALUE"},
			{"bad regex", []string{"--http-header", "x-dev=("}, "--http-header x-dev=("},
			{"replace", []string{"--http-header", "x-dev=carol", "--replace"}, "--replace cannot be combined"},
		} {
			r := teledock(t, append([]string{"intercept", "bob-more", "-w", "filtered", "--port", "8103:http", "--name", bob}, c.args...)...)
			if r.err == nil || exitCode(r.err) != 2 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("%s: exit %d, stderr lacks %q:\n%s", c.name, exitCode(r.err), c.want, r.stderr)
			}
		}
		list := must(t, teledock(t, "list", "--name", bob), "list")
		if strings.Contains(list, "bob-more") {
			t.Errorf("a refused intercept is listed:\n%s", list)
		}
	})

	t.Run("wiretap copies while the app answers", func(t *testing.T) {
		_, tapContainer := filterHandler(t, ns, bob, "h-tap", 8103, 9103)
		out := ib.intercept("bob-tap", "-w", "filtered", "--port", "8103:http", "--wiretap")
		wantBlock(t, out, "Using Deployment filtered", map[string]string{"Wiretap": "all requests", "Intercepting": "copies of HTTP requests"})
		nonce := randomHex(4)
		// The wiretap is in place once a copy of a request reaches its handler.
		eventually(t, 90*time.Second, "the wiretap's handler gets copies", func() error {
			r := fromCluster(t, ns, "http-seq", "http://filtered", "/?tap="+nonce+"-probe")
			if r.err != nil {
				return fmt.Errorf("%v: %s", r.err, r.stderr)
			}
			return handlerSaw(t, tapContainer, "tap="+nonce+"-probe")
		})
		items := []string{"/?tap=" + nonce + "-0", "/?tap=" + nonce + "-1;x-dev=alice", "/?tap=" + nonce + "-2", "/?tap=" + nonce + "-3"}
		r := fromCluster(t, ns, append([]string{"http-seq", "http://filtered"}, items...)...)
		if r.err != nil {
			t.Fatalf("requests: %v %s", r.err, r.stderr)
		}
		if err := matchLines(strings.Split(strings.TrimSpace(r.stdout), "\n"), []string{app, aliceText, app, app, "connections 1"}); err != nil {
			t.Errorf("with a wiretap: %v", err)
		}
		eventually(t, 30*time.Second, "the wiretap's handler saw every request", func() error {
			for i := range items {
				if err := handlerSaw(t, tapContainer, fmt.Sprintf("tap=%s-%d", nonce, i)); err != nil {
					return err
				}
			}
			return nil
		})
		eventually(t, 30*time.Second, "status counts the copies", func() error {
			st := must(t, teledock(t, "status", "--name", bob), "status")
			if !regexp.MustCompile(`(?m)^\s+bob-tap: \S+ \(wiretap of all requests; [1-9]\d* copies, \d+ dropped\)$`).MatchString(st) {
				return fmt.Errorf("status:\n%s", st)
			}
			return nil
		})
		must(t, teledock(t, "leave", "bob-tap", "--name", bob), "leave the wiretap")
	})

	t.Run("leaving one intercept leaves the other working", func(t *testing.T) {
		must(t, teledock(t, "leave", "alice", "--name", alice), "leave alice")
		wantSeq(t, ns, "http://filtered", []string{"/;x-dev=alice", "/;x-dev=bob", "/"}, []string{app, bobText, app})
	})

	// bob's header filter would overlap any path filter: path filters get the port to themselves.
	t.Run("path prefixes", func(t *testing.T) {
		must(t, teledock(t, "leave", "bob", "--name", bob), "leave bob")
		ia.intercept("alice-path", "-w", "filtered", "--port", "8101:http", "--http-path-prefix", "/who/alice")
		ib.intercept("bob-path", "-w", "filtered", "--port", "8102:http", "--http-path-prefix", "/who/bob")
		wantSeq(t, ns, "http://filtered", []string{"/who/alice/x", "/who/bob/y", "/who/carol", "/", "/who/alice"},
			[]string{aliceText, bobText, app, app, aliceText})
		must(t, teledock(t, "leave", "alice-path", "--name", alice), "leave alice-path")
		must(t, teledock(t, "leave", "bob-path", "--name", bob), "leave bob-path")
	})

	t.Run("auto header", func(t *testing.T) {
		out := ia.intercept("alice-auto", "-w", "filtered", "--port", "8101:http", "--http-header", "auto")
		m := regexp.MustCompile(`HTTP filter\s*: header x-teledock-id=([0-9a-f]{16})\n`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the block does not show the generated header:\n%s", out)
		}
		wantSeq(t, ns, "http://filtered", []string{"/;x-teledock-id=" + m[1], "/", "/;x-teledock-id=0000000000000000"},
			[]string{aliceText, app, app})
	})
}

// filterHandler starts a handler container in the connection's network that answers HTTP on port
// and gRPC on grpcPort and logs every request; it returns the text only it answers with, and the
// container's name.
func filterHandler(t *testing.T, ns, conn, name string, port, grpcPort int) (string, string) {
	t.Helper()
	cname := name + "-" + ns[len(ns)-6:]
	text := "answered locally by " + cname
	must(t, teledock(t, "run", "--connection", conn, "-d", "--name", cname,
		"-e", fmt.Sprintf("PORT=%d", port), "-e", fmt.Sprintf("UDP_PORT=%d", port+1000), "-e", fmt.Sprintf("GRPC_PORT=%d", grpcPort),
		"-e", "LOG_REQUESTS=1", "-e", "ECHO_TEXT="+text, image("echo")), "start handler "+cname)
	t.Cleanup(func() { docker(t, "rm", "-f", cname) })
	return text, cname
}

// wantSeq polls `probe http-seq` from the client pod until its answers start with want, in order,
// over one connection.
func wantSeq(t *testing.T, ns, base string, items, want []string) {
	t.Helper()
	eventually(t, 90*time.Second, fmt.Sprintf("GETs %v of one connection answered by %v", items, want), func() error {
		r := fromCluster(t, ns, append([]string{"http-seq", base}, items...)...)
		if r.err != nil {
			return fmt.Errorf("%v: %s", r.err, r.stderr)
		}
		return matchLines(strings.Split(strings.TrimSpace(r.stdout), "\n"), append(want, "connections 1"))
	})
}

// matchLines checks that each line starts with the prefix want has for it.
func matchLines(lines, want []string) error {
	if len(lines) != len(want) {
		return fmt.Errorf("%d answers %q, want %d", len(lines), lines, len(want))
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]) {
			return fmt.Errorf("answer %d is %q, want %q…; all: %q", i, l, want[i], lines)
		}
	}
	return nil
}

// handlerSaw checks that the handler container logged a request containing s.
func handlerSaw(t *testing.T, container, s string) error {
	t.Helper()
	r := docker(t, "logs", container)
	if r.err != nil {
		return fmt.Errorf("docker logs %s: %v", container, r.err)
	}
	if !strings.Contains(r.stdout+r.stderr, s) {
		return fmt.Errorf("%s did not log a request with %q", container, s)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
