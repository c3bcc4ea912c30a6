//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"teledock.dev/teledock/e2e/pattern"
)

// runPod runs /probe ARGS in a pod of ns and returns its logs once it has finished.
func runPod(t testing.TB, ns, name string, args ...string) (string, bool) {
	t.Helper()
	must(t, kubectl(t, append([]string{"-n", ns, "run", name, "--image", image("echo"), "--image-pull-policy=Never",
		"--restart=Never", "--command", "--", "/probe"}, args...)...), "run pod "+name)
	var phase string
	eventually(t, 90*time.Second, "pod "+name+" finishes", func() error {
		phase = jsonpath(t, ns, "pod/"+name, "{.status.phase}")
		if phase != "Succeeded" && phase != "Failed" {
			return fmt.Errorf("phase %q", phase)
		}
		return nil
	})
	logs := must(t, kubectl(t, "-n", ns, "logs", name), "logs of "+name)
	return logs, phase == "Succeeded"
}

func TestNodeReadyWithVerifiedTLS(t *testing.T) {
	kc, err := os.ReadFile(cfg.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(kc), "insecure-skip-tls-verify") || !strings.Contains(string(kc), "certificate-authority-data") {
		t.Fatalf("the admin kubeconfig must verify the API server's certificate:\n%s", kc)
	}
	status := jsonpath(t, "", "nodes", `{.items[*].status.conditions[?(@.type=="Ready")].status}`)
	if status != "True" {
		t.Fatalf("node Ready = %q, want True", status)
	}
}

// ServiceAccount tokens authenticate as the account, and RBAC limits what they may do.
func TestServiceAccountIdentityAndRBAC(t *testing.T) {
	ns := newNamespace(t)
	must(t, kubectl(t, "-n", ns, "create", "serviceaccount", "reader"), "create serviceaccount")
	token := strings.TrimSpace(must(t, kubectl(t, "-n", ns, "create", "token", "reader"), "create token"))
	asReader := tokenKubeconfig(t, token)
	who := must(t, run(t, time.Minute, cfg.kubectl, "--kubeconfig", asReader, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"), "whoami")
	if want := "system:serviceaccount:" + ns + ":reader"; strings.TrimSpace(who) != want {
		t.Fatalf("token acts as %q, want %q", who, want)
	}
	r := run(t, time.Minute, cfg.kubectl, "--kubeconfig", asReader, "-n", "kube-system", "get", "secrets")
	if r.err == nil || !strings.Contains(r.stderr, "Forbidden") {
		t.Fatalf("a fresh service account listed kube-system secrets (RBAC off?): err=%v stderr=%s", r.err, r.stderr)
	}
}

// tokenKubeconfig writes a kubeconfig that authenticates with token alone (no client certificate).
func tokenKubeconfig(t *testing.T, token string) string {
	t.Helper()
	raw := func(path string) string {
		return strings.TrimSpace(must(t, kubectl(t, "config", "view", "--raw", "--minify", "-o", "jsonpath="+path), "config view"))
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority-data: %s}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, raw("{.clusters[0].cluster.server}"), raw("{.clusters[0].cluster.certificate-authority-data}"), token)
	f := t.TempDir() + "/kubeconfig"
	if err := os.WriteFile(f, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPodResolvesClusterNames(t *testing.T) {
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	clusterIP := jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")
	for _, c := range []struct{ name, want string }{
		{"kubernetes.default", "10.96.0.1"},
		{"echo", clusterIP},
		{"echo." + ns + ".svc.cluster.local", clusterIP},
	} {
		logs, ok := runPod(t, ns, "dns-"+strings.ReplaceAll(strings.Split(c.name, ".")[0], "_", "-")+fmt.Sprint(len(c.name)), "dns", c.name)
		if !ok || strings.TrimSpace(logs) != c.want {
			t.Errorf("a pod resolved %s to %q (ok=%v), want %s", c.name, logs, ok, c.want)
		}
	}
}

func TestEchoThroughPortForward(t *testing.T) {
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	port := portForward(t, ns, "service/echo", 80)
	base := "http://127.0.0.1:" + port
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), app.Text+" from echo-") {
		t.Fatalf("GET / through port-forward = %q, want the echo pod's greeting %q", body, app.Text)
	}
	const n = 8 << 20
	resp, err = http.Get(fmt.Sprintf("%s/bytes?n=%d", base, n))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := pattern.Hasher()
	if got, err := io.Copy(h, resp.Body); err != nil || got != n {
		t.Fatalf("download: %d bytes, err %v", got, err)
	}
	if got, want := h.Sum(), pattern.SHA256(n); got != want {
		t.Fatalf("download checksum %s, want %s", got, want)
	}
}

// Docker containers must not reach the cluster except through teledock, or a test could pass by
// going around it. The host still can (control), and containers reach the API server (control).
func TestDockerCannotReachClusterDirectly(t *testing.T) {
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	podIP := jsonpath(t, ns, "pods", "{.items[0].status.podIP}")
	clusterIP := jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")

	// Control: from the host, the pod and the service answer (kube-proxy may need a moment).
	for _, addr := range []string{podIP + ":8080", clusterIP + ":80"} {
		eventually(t, 30*time.Second, "control: the host reaches "+addr, func() error {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
			if err != nil {
				return err
			}
			return resp.Body.Close()
		})
	}
	probe := func(args ...string) cmdResult {
		return docker(t, append([]string{"run", "--rm", "--add-host", "host.docker.internal:host-gateway",
			"--entrypoint", "/probe", image("echo"), "-timeout", "3s"}, args...)...)
	}
	// Control: a container reaches the API server on the host gateway, so its network works.
	must(t, probe("tcp", "host.docker.internal:6443"), "container reaches the API server")

	for _, args := range [][]string{
		{"tcp", podIP + ":8080"},
		{"tcp", clusterIP + ":80"},
		{"dns", "kubernetes.default.svc.cluster.local", "10.96.0.10:53"},
	} {
		if r := probe(args...); r.err == nil {
			t.Errorf("a plain Docker container reached the cluster with probe %v: %s", args, r.stdout)
		}
	}
	// The same holds on user-defined Docker networks.
	net := "e2e-isolation-" + ns[len(ns)-6:]
	must(t, docker(t, "network", "create", net), "docker network create")
	t.Cleanup(func() { docker(t, "network", "rm", net) })
	r := docker(t, "run", "--rm", "--network", net, "--entrypoint", "/probe", image("echo"), "-timeout", "3s", "tcp", podIP+":8080")
	if r.err == nil {
		t.Errorf("a container on a user-defined network reached pod %s directly", podIP)
	}
}
