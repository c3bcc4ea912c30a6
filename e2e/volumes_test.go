//go:build e2e

package e2e

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"teledock.dev/teledock/agent/agentconfig"
)

// The traffic-agent serves the intercepted container's mounts over SFTP on the pod's loopback, at
// the container's paths: a ConfigMap, a Secret, the ServiceAccount token and an emptyDir, read-only
// where the pod mounts them read-only; a write into the emptyDir is what the app sees. Reached here
// with kubectl port-forward (the pod's loopback, as the session's --to-pod path reaches it).
func TestAgentServesVolumes(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "volumes.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/vols", "--timeout=120s"), "rollout of vols")
	pod := jsonpath(t, ns, "pods -l app=vols", "{.items[0].metadata.name}")
	if c := jsonpath(t, ns, "pod "+pod, "{.spec.containers[*].name}"); !strings.Contains(c, "traffic-agent") {
		t.Fatalf("no agent in %s: %s", pod, c)
	}
	port := portForward(t, ns, "pod/"+pod, agentconfig.VolumesPort)
	var client *sftp.Client
	eventually(t, 30*time.Second, "an SFTP session with the agent", func() error {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
		if err != nil {
			return err
		}
		c, err := sftp.NewClientPipe(conn, conn)
		if err != nil {
			conn.Close()
			return err
		}
		client = c
		return nil
	})
	t.Cleanup(func() { client.Close() })

	read := func(p string) string {
		t.Helper()
		f, err := client.Open(p)
		if err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return string(b)
	}
	if got := read("/app/etc/config/color"); got != "blue" {
		t.Errorf("ConfigMap key = %q", got)
	}
	if got := read("/app/var/run/secrets/app/token"); got != "vol-s3cr3t" {
		t.Errorf("Secret key = %q", got)
	}
	if got := read("/app/var/run/secrets/kubernetes.io/serviceaccount/namespace"); got != ns {
		t.Errorf("ServiceAccount namespace = %q", got)
	}
	if got := read("/app/var/run/secrets/kubernetes.io/serviceaccount/token"); strings.Count(got, ".") != 2 {
		t.Errorf("ServiceAccount token is not a JWT: %q", got)
	}
	if _, err := client.Create("/app/etc/config/new"); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("create in the read-only ConfigMap: %v, want permission denied", err)
	}
	if _, err := client.Open("/app/etc/passwd"); err == nil {
		t.Errorf("a file outside the mounts was served")
	}
	f, err := client.Create("/app/cache/from-developer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("written through the agent")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out := must(t, kubectl(t, "-n", ns, "exec", pod, "-c", "app", "--", "/probe", "cat", "/cache/from-developer"), "read it in the app container")
	if out != "written through the agent" {
		t.Errorf("the app container sees %q", out)
	}
}
