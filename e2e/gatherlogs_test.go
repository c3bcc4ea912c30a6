//go:build e2e

package e2e

import (
	"archive/zip"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// gather-logs: one zip with the daemon's log, status, the manager's and the agents' logs and the
// versions, and none of the intercepted pod's environment values.
func TestGatherLogs(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	conn := connect(t, ns)
	must(t, teledock(t, "intercept", "echo", "--port", "8080", "--name", conn), "intercept echo")
	t.Cleanup(func() { teledock(t, "leave", "echo", "--name", conn) })

	path := filepath.Join(t.TempDir(), "logs.zip")
	out := must(t, teledock(t, "gather-logs", "--name", conn, "--kubeconfig", cfg.kubeconfig, "-o", path), "gather-logs")
	if !strings.Contains(out, path) {
		t.Errorf("gather-logs printed %q, want the file's name", out)
	}
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	files := map[string]string{}
	for _, f := range z.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[f.Name] = string(b)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	t.Logf("files: %v; errors.txt: %q", names, files["errors.txt"])

	var st struct{ Daemon struct{ Running bool } }
	if err := json.Unmarshal([]byte(files["status.json"]), &st); err != nil || !st.Daemon.Running {
		t.Errorf("status.json: %v %q", err, files["status.json"])
	}
	if !strings.Contains(files["daemon.log"], "session arrived") {
		t.Errorf("daemon.log lacks the session's arrival: %.300q", files["daemon.log"])
	}
	if !strings.Contains(files["versions.txt"], "daemon image "+image("daemon")) || !strings.Contains(files["versions.txt"], "traffic-agent") {
		t.Errorf("versions.txt: %q", files["versions.txt"])
	}
	var manager, agent bool
	for n, body := range files {
		manager = manager || (strings.HasPrefix(n, "manager/") && strings.Contains(body, "client arrived"))
		agent = agent || (strings.HasPrefix(n, "agents/"+ns+"/echo-") && body != "")
		if strings.Contains(body, app.Text) {
			t.Errorf("%s holds the pod's ECHO_TEXT value", n)
		}
	}
	if !manager || !agent {
		t.Errorf("manager log found: %v, agent log found: %v (files %v)", manager, agent, names)
	}
}
