//go:build e2e

// Package e2e drives the real teledock binary, kubectl and docker against the local test cluster
// (make cluster-up) and the local Docker engine. Run it with `make test-e2e`.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"
)

// config is what the Makefile tells the suite; set once in TestMain, read-only afterwards.
type config struct {
	kubeconfig string
	kubectl    string
	teledock   string
	version    string
}

var cfg config

func TestMain(m *testing.M) {
	cfg = config{
		kubeconfig: os.Getenv("TELEDOCK_E2E_KUBECONFIG"),
		kubectl:    os.Getenv("TELEDOCK_E2E_KUBECTL"),
		teledock:   os.Getenv("TELEDOCK_E2E_BINARY"),
		version:    os.Getenv("TELEDOCK_E2E_VERSION"),
	}
	if cfg.kubeconfig == "" || cfg.kubectl == "" || cfg.teledock == "" || cfg.version == "" {
		fmt.Fprintln(os.Stderr, "e2e: run through `make test-e2e` (TELEDOCK_E2E_* variables are not set)")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

func image(name string) string { return "teledock/" + name + ":" + cfg.version }

// cmdResult is a finished command's output.
type cmdResult struct {
	stdout, stderr string
	err            error
}

// run runs a program with a deadline and returns what it printed.
func run(t testing.TB, timeout time.Duration, name string, args ...string) cmdResult {
	t.Helper()
	return runEnv(t, timeout, nil, name, args...)
}

// runEnv is run with variables added to the environment.
func runEnv(t testing.TB, timeout time.Duration, env []string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, ctx.Err())
	}
	return cmdResult{stdout: out.String(), stderr: errb.String(), err: err}
}

// must fails the test when the command failed, showing its output.
func must(t testing.TB, r cmdResult, what string) string {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", what, r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

func kubectl(t testing.TB, args ...string) cmdResult {
	t.Helper()
	return run(t, 2*time.Minute, cfg.kubectl, append([]string{"--kubeconfig", cfg.kubeconfig}, args...)...)
}

func docker(t testing.TB, args ...string) cmdResult {
	t.Helper()
	return run(t, 2*time.Minute, "docker", args...)
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// newNamespace makes a namespace for one test and deletes it afterwards.
func newNamespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	base := nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	ns := strings.Trim("e2e-"+base, "-") + "-" + hex.EncodeToString(b)
	must(t, kubectl(t, "create", "namespace", ns), "create namespace")
	t.Cleanup(func() { kubectl(t, "delete", "namespace", ns, "--wait=false") })
	return ns
}

// apply renders a manifest from testdata with data and applies it in ns.
func apply(t testing.TB, ns, file string, data any) {
	t.Helper()
	tpl, err := template.ParseFiles("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/" + file
	if err := os.WriteFile(f, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, kubectl(t, "-n", ns, "apply", "-f", f), "apply "+file)
}

type echoApp struct{ Name, Namespace, Image, Text string }

// deployEcho deploys the echo app as name in ns and waits for its rollout.
func deployEcho(t testing.TB, ns, name string) echoApp {
	t.Helper()
	app := echoApp{Name: name, Namespace: ns, Image: image("echo"), Text: "hello from " + name + " in " + ns}
	apply(t, ns, "echo.yaml", app)
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/"+name, "--timeout=120s"), "rollout of "+name)
	// A ready pod is not yet a working Service: kube-proxy programs it a moment later. The host's
	// traffic to a ClusterIP goes through the same rules, so wait until it gets through.
	clusterIP := jsonpath(t, ns, "service/"+name, "{.spec.clusterIP}")
	eventually(t, 30*time.Second, "service "+name+" answers at its ClusterIP", func() error {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + clusterIP + "/")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	return app
}

// jsonpath reads one field of an object with kubectl's jsonpath; obj may hold several words
// ("pods -l app=echo").
func jsonpath(t testing.TB, ns, obj, path string) string {
	t.Helper()
	args := append(append([]string{"-n", ns, "get"}, strings.Fields(obj)...), "-o", "jsonpath="+path)
	return strings.TrimSpace(must(t, kubectl(t, args...), "get "+obj))
}

// portForward starts `kubectl port-forward` to target's remote port and returns the local port.
func portForward(t testing.TB, ns, target string, remote int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, cfg.kubectl, "--kubeconfig", cfg.kubeconfig, "-n", ns,
		"port-forward", target, fmt.Sprintf(":%d", remote))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	ports := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
				break
			}
		}
		for sc.Scan() { // keep draining so kubectl never blocks on a full pipe
		}
	}()
	select {
	case p := <-ports:
		return p
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward %s printed no local port within 30s: %s", target, stderr.String())
		return ""
	}
}

// eventually polls f until it returns nil or the deadline passes, then fails with f's last error.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
