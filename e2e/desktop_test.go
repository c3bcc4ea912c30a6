//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Desktop extension's story in a real browser: TELEDOCK_E2E_CHROMIUM names Debian's chromium
// (make test sets it after `make deps` installed it), and desktop/ui/build/ui is the built UI
// (`make ui`). Run by hand without them, the test skips and says so.

// bridge stands in for Docker Desktop: it serves the built UI unchanged and runs what the UI's
// ddClient asks, from an allowlist: the teledock binary (against the built-in cluster's
// kubeconfig), and `docker logs` / `docker rm -f`.
type bridge struct {
	uiDir string
	env   []string
	mu    sync.Mutex
	calls []string // what the UI ran, for the test log
}

type execRequest struct {
	Kind string   `json:"kind"` // host or docker
	Cmd  string   `json:"cmd"`
	Args []string `json:"args"`
}

func (b *bridge) command(ctx context.Context, r execRequest) (*exec.Cmd, error) {
	switch {
	case r.Kind == "host" && r.Cmd == "teledock":
		cmd := exec.CommandContext(ctx, cfg.teledock, r.Args...)
		cmd.Env = b.env
		return cmd, nil
	case r.Kind == "docker" && len(r.Args) > 0 && (r.Cmd == "logs" || r.Cmd == "rm"):
		return exec.CommandContext(ctx, "docker", append([]string{r.Cmd}, r.Args...)...), nil
	}
	return nil, fmt.Errorf("not allowed: %s %s %v", r.Kind, r.Cmd, r.Args)
}

func (b *bridge) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case strings.HasPrefix(req.URL.Path, "/ui/"):
		http.StripPrefix("/ui/", http.FileServer(http.Dir(b.uiDir))).ServeHTTP(w, req)
	case req.URL.Path == "/exec" || req.URL.Path == "/stream":
		var r execRequest
		if err := json.NewDecoder(req.Body).Decode(&r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.calls = append(b.calls, r.Cmd+" "+strings.Join(r.Args, " "))
		b.mu.Unlock()
		cmd, err := b.command(req.Context(), r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if req.URL.Path == "/stream" {
			b.stream(w, cmd)
			return
		}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		code := 0
		if err := cmd.Run(); err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"stdout": stdout.String(), "stderr": stderr.String(), "code": code})
	default:
		http.NotFound(w, req)
	}
}

// stream copies the command's stdout to the response as it comes, until it exits or the page
// closes the request (which kills it).
func (b *bridge) stream(w http.ResponseWriter, cmd *exec.Cmd) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := cmd.Start(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := out.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			break
		}
	}
	_ = cmd.Wait()
}

func TestDesktopExtensionStory(t *testing.T) {
	chromium := os.Getenv("TELEDOCK_E2E_CHROMIUM")
	uiDir, _ := filepath.Abs("../desktop/ui/build/ui")
	if chromium == "" {
		t.Skip("TELEDOCK_E2E_CHROMIUM is not set (make test sets it): the browser story needs Debian's chromium")
	}
	if _, err := os.Stat(filepath.Join(uiDir, "app.js")); err != nil {
		t.Fatalf("the built UI is missing (make ui): %v", err)
	}
	ensureManager(t)
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	clusterIP := jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")
	t.Cleanup(func() {
		// Whatever the story left: the handler and the connection.
		docker(t, "rm", "-f", "echo-handler")
		teledock(t, "quit", "--name", "default")
	})

	b := &bridge{uiDir: uiDir, env: append(os.Environ(), "KUBECONFIG="+cfg.kubeconfig)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: b}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})

	shots, _ := filepath.Abs("../build/screenshots/desktop")
	_ = os.RemoveAll(shots)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "test/e2e/story.mjs")
	node.Dir = "../desktop/ui"
	node.Env = append(os.Environ(), "BRIDGE=http://"+ln.Addr().String(), "CHROMIUM="+chromium, "SHOTS="+shots,
		"NAMESPACE="+ns, "WORKLOAD=echo", "HANDLER_IMAGE="+image("echo"))
	stdin, err := node.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	node.Stderr = node.Stdout
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		t.Log(line)
		switch {
		case line == "INTERCEPTED":
			// A request made inside the cluster (to the Service's ClusterIP, through kube-proxy) is
			// answered by the handler the UI started: the pod's text, the handler's hostname.
			var last string
			ok := poll(60*time.Second, func() bool {
				r := httpGetVerbose("http://" + clusterIP + "/")
				last = r
				return strings.HasPrefix(r, "200 OK\n"+app.Text+" from ") && !strings.Contains(r, " from echo-")
			})
			if !ok {
				logHandlerState(t, ns)
				t.Fatalf("the cluster's request answered by the handler: not within 60s; the last answer: %q", last)
			}
			_, _ = io.WriteString(stdin, "go on\n")
			_ = stdin.Close()
		case strings.HasPrefix(line, "REVEALED "):
			if got := strings.TrimPrefix(line, "REVEALED "); got != app.Text {
				t.Errorf("the revealed ECHO_TEXT is %q, want the pod's %q", got, app.Text)
			}
		case line == "LEFT":
			eventually(t, 30*time.Second, "the handler container the UI started is gone", func() error {
				if r := docker(t, "inspect", "echo-handler"); r.err == nil {
					return fmt.Errorf("echo-handler still exists")
				}
				return nil
			})
			eventually(t, 60*time.Second, "the cluster's traffic back at the workload", func() error {
				r := httpGet("http://" + clusterIP + "/")
				if r.err != nil || !strings.Contains(r.stdout, " from echo-") {
					return fmt.Errorf("GET %s = %q %v", clusterIP, r.stdout, r.err)
				}
				return nil
			})
		}
	}
	err = node.Wait()
	b.mu.Lock()
	t.Logf("the UI ran: %q", b.calls)
	b.mu.Unlock()
	if err != nil || !slices.Contains(lines, "DONE") {
		t.Fatalf("the story failed (%v); screenshots in %s", err, shots)
	}
	if r := docker(t, "inspect", "teledock-daemon-default"); r.err == nil {
		t.Error("the daemon container is still there after Quit")
	}
	for _, want := range []string{"1-connection", "2-workloads", "3-intercept-dialog", "4-env-masked", "7-quit"} {
		if _, err := os.Stat(filepath.Join(shots, want+".png")); err != nil {
			t.Errorf("screenshot %s: %v", want, err)
		}
	}
}

// httpGetVerbose is "STATUS\nBODY", or "error: ..." — everything a failed check should show. Each
// request goes on a new connection: a kept-alive one (from an earlier test, to a ClusterIP that
// has since been given to another Service) would not show where new traffic goes.
func httpGetVerbose(url string) string {
	resp, err := freshClient(5 * time.Second).Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	s := fmt.Sprintf("%s\n%s", resp.Status, b)
	if err != nil {
		s += " (read: " + err.Error() + ")"
	}
	if len(b) == 0 {
		s += fmt.Sprintf(" [proto %s, headers %v]", resp.Proto, resp.Header)
	}
	return s
}

// poll calls f until it is true or the timeout ends.
func poll(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// logHandlerState logs what a failed handler check needs: the containers, the connection's
// status and intercepts, the handler's and the daemon's logs.
func logHandlerState(t *testing.T, ns string) {
	t.Helper()
	for _, args := range [][]string{
		{"ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Image}}"},
		{"logs", "--tail", "50", "echo-handler"},
		{"logs", "--tail", "80", "teledock-daemon-default"},
	} {
		r := docker(t, args...)
		t.Logf("docker %s:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"status", "--name", "default", "-o", "json"}, {"list", "--name", "default", "-o", "json"}} {
		r := teledock(t, args...)
		t.Logf("teledock %s:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	r := kubectl(t, "-n", ns, "get", "pods,endpoints", "-o", "wide")
	t.Logf("kubectl get pods,endpoints:\n%s%s", r.stdout, r.stderr)
}
