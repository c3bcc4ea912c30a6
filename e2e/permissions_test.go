//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConnectNeedsPortForwardRights: clients reach the manager only through a port-forward into its
// pod, so credentials that may read everything (the "view" ClusterRole) but not create
// pods/portforward cannot: connect fails at once with CLUSTER_AUTH (exit 3) and a hint naming the
// right, and leaves no container behind.
func TestConnectNeedsPortForwardRights(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	must(t, kubectl(t, "-n", ns, "create", "serviceaccount", "viewer"), "create a service account")
	binding := ns + "-viewer"
	t.Cleanup(func() { kubectl(t, "delete", "clusterrolebinding", binding, "--ignore-not-found") })
	must(t, kubectl(t, "create", "clusterrolebinding", binding, "--clusterrole=view", "--serviceaccount="+ns+":viewer"), "bind view")
	token := strings.TrimSpace(must(t, kubectl(t, "-n", ns, "create", "token", "viewer"), "a token of the service account"))

	server := must(t, kubectl(t, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"), "the API server's URL")
	caData := must(t, kubectl(t, "config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}"), "the cluster's CA")
	if _, err := base64.StdEncoding.DecodeString(caData); err != nil {
		t.Fatalf("CA data: %v", err)
	}
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "viewer",
		"clusters": []any{map[string]any{"name": "c", "cluster": map[string]any{"server": server, "certificate-authority-data": caData}}},
		"users":    []any{map[string]any{"name": "viewer", "user": map[string]any{"token": token}}},
		"contexts": []any{map[string]any{"name": "viewer", "context": map[string]any{"cluster": "c", "user": "viewer", "namespace": ns}}},
	}
	data, _ := json.Marshal(kc) // JSON is YAML
	path := filepath.Join(t.TempDir(), "viewer.kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	r := teledock(t, "connect", "--kubeconfig", path, "--name", conn, "--manager-namespace", managerNamespace,
		"--image", image("daemon"), "-o", "json")
	var got struct {
		Error struct{ Code, Message, Hint string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || exitCode(r.err) != 3 || got.Error.Code != "CLUSTER_AUTH" {
		t.Fatalf("connect without pods/portforward: exit %d (%v)\n%s%s\nwant exit 3 and CLUSTER_AUTH", exitCode(r.err), err, r.stdout, r.stderr)
	}
	if !strings.Contains(got.Error.Message, "pods/portforward") || !strings.Contains(got.Error.Hint, "pods/portforward") {
		t.Errorf("the error does not name the missing right: %+v", got.Error)
	}
	if out := must(t, docker(t, "ps", "-aq", "--filter", "name=teledock-daemon-"+conn), "docker ps"); strings.TrimSpace(out) != "" {
		t.Errorf("a daemon container is left after the refused connect: %s", out)
	}
}

// TestDaemonAPIOnlyForTheHost: the daemon's API answers the host (its published loopback port, and
// its address on the Docker network, which the volume plugin dials from the engine's namespace)
// and containers in its namespace, but not another container on the same network.
func TestDaemonAPIOnlyForTheHost(t *testing.T) {
	ensureManager(t)
	conn := connect(t, newNamespace(t))
	s := status(t, conn)
	ip := strings.TrimSpace(must(t, docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", s.Daemon.Container), "the daemon's address"))
	ip, _, _ = strings.Cut(ip, " ")
	if ip == "" {
		t.Fatalf("the daemon container %s has no network address", s.Daemon.Container)
	}
	api := net.JoinHostPort(ip, "7777")

	must(t, hostProbe(t, 30*time.Second, "-timeout", "10s", "h2", api), "the API from the host at "+api)
	must(t, dockerProbe("--network", "container:"+s.Daemon.Container)(t, 30*time.Second, "-timeout", "10s", "h2", "127.0.0.1:7777"),
		"the API from a container in the daemon's namespace")
	r := dockerProbe()(t, 30*time.Second, "-timeout", "10s", "h2", api)
	if r.err == nil {
		t.Fatalf("another container on the daemon's network reached its API at %s:\n%s", api, r.stdout)
	}
	t.Logf("another container on the network: %s", strings.TrimSpace(r.stderr))
	logs := docker(t, "logs", s.Daemon.Container)
	if !strings.Contains(logs.stdout+logs.stderr, "refused an API connection") {
		t.Errorf("the daemon's log does not mention the refused connection")
	}
}
