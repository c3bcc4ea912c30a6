//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nonRootUID is a user with no passwd entry, no home but the test's and no group but docker's:
// what a CI job's user (or a developer) has when it may only use Docker.
const nonRootUID = 4242

// TestNonRootCLI: the CLI needs no root, only the Docker socket. Run as a user that is only in
// the docker group (no sudo, no capability, no host routes or DNS to change): connect, run a
// container that reaches the cluster, intercept with a handler, leave and quit.
func TestNonRootCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		// Then the whole suite already runs as a non-root user.
		t.Skip("the suite runs as a non-root user already")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop to a non-root user: %v", err)
	}
	group, err := user.LookupGroup("docker")
	if err != nil {
		t.Fatalf("the docker group: %v", err)
	}
	ensureManager(t)
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	clusterIP := jsonpath(t, ns, "service/echo", "{.spec.clusterIP}")

	home, err := os.MkdirTemp("", "teledock-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	kubeconfig := filepath.Join(home, "kubeconfig")
	data, err := os.ReadFile(cfg.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{home, kubeconfig} {
		if err := os.Chown(p, nonRootUID, nonRootUID); err != nil {
			t.Fatal(err)
		}
	}
	asUser := func(args ...string) cmdResult {
		t.Helper()
		argv := append([]string{"--reuid", fmt.Sprint(nonRootUID), "--regid", fmt.Sprint(nonRootUID), "--groups", group.Gid,
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
			"env", "-i", "HOME=" + home, "USER=ci", "PATH=/usr/local/bin:/usr/bin:/bin", "KUBECONFIG=" + kubeconfig,
			cfg.teledock}, args...)
		return run(t, 3*time.Minute, setpriv, argv...)
	}
	conn := "e2e-nonroot"
	t.Cleanup(func() { asUser("quit", "--name", conn) })
	must(t, asUser("connect", "-n", ns, "--name", conn, "--manager-namespace", managerNamespace, "--image", image("daemon")), "connect as a non-root user")
	out := must(t, asUser("run", "--connection", conn, "--rm", "--entrypoint", "/probe", image("echo"), "-timeout", "60s", "http", "http://echo/"), "run as a non-root user")
	if !strings.HasPrefix(out, app.Text) {
		t.Errorf("GET http://echo/ from the non-root user's container = %q", out)
	}
	handler := conn + "-handler"
	t.Cleanup(func() { docker(t, "rm", "-f", handler) })
	must(t, asUser("intercept", "echo", "--port", "8080", "--name", conn), "intercept as a non-root user")
	must(t, asUser("run", "--connection", conn, "-d", "--name", handler, "-e", "ECHO_TEXT=nonroot", image("echo")), "handler as a non-root user")
	eventually(t, 60*time.Second, "the cluster's request answered by the non-root user's handler", func() error {
		if r := httpGet("http://" + clusterIP + "/"); r.err != nil || !strings.HasPrefix(r.stdout, "nonroot from ") {
			return fmt.Errorf("GET %s = %q %v", clusterIP, r.stdout, r.err)
		}
		return nil
	})
	must(t, asUser("leave", "echo", "--name", conn), "leave as a non-root user")
	must(t, asUser("quit", "--name", conn), "quit as a non-root user")
	// What the user's teledock kept is the user's own.
	err = filepath.Walk(home, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fileOwner(fi); ok && st != nonRootUID {
			t.Errorf("%s is owned by uid %d, not the user", p, st)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func fileOwner(fi os.FileInfo) (int, bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), true
	}
	return 0, false
}
