//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// TestJSONForScripts: what scripts and the Desktop extension read — the contexts and namespaces
// for the pickers, JSON errors with a code and a hint, and `status --watch -o json` following a
// connection from nothing to connected and back.
func TestJSONForScripts(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)

	var contexts struct {
		SchemaVersion int
		Contexts      []struct {
			Name    string
			Current bool
		}
	}
	out := must(t, teledock(t, "contexts", "--kubeconfig", cfg.kubeconfig, "-o", "json"), "contexts")
	if err := json.Unmarshal([]byte(out), &contexts); err != nil || contexts.SchemaVersion != 1 || len(contexts.Contexts) == 0 || !contexts.Contexts[0].Current {
		t.Errorf("contexts: %v\n%s", err, out)
	}
	var namespaces struct{ Namespaces []string }
	out = must(t, teledock(t, "namespaces", "--kubeconfig", cfg.kubeconfig, "-o", "json"), "namespaces")
	if err := json.Unmarshal([]byte(out), &namespaces); err != nil || !slices.Contains(namespaces.Namespaces, ns) {
		t.Errorf("namespaces lacks %s: %v\n%s", ns, err, out)
	}

	conn := connName(t, "")
	r := teledock(t, "list", "--name", conn, "-o", "json")
	var e struct {
		Error struct{ Code, Message, Hint string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &e); r.err == nil || err != nil || e.Error.Code != "NOT_CONNECTED" || e.Error.Hint == "" {
		t.Errorf("list -o json while not connected: %v %v %q", r.err, err, r.stdout)
	}
	// Exit codes by kind (docs/json.md), with or without -o json.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"list", "--name", conn}, 9},                                    // not connected
		{[]string{"list", "--name", conn, "-o", "json"}, 9},                      // the same as JSON
		{[]string{"connect", "--no-such-flag"}, 2},                               // usage
		{[]string{"env"}, 2},                                                     // a missing argument
		{[]string{"connect", "--kubeconfig", "/nonexistent", "--name", conn}, 3}, // kubeconfig
	} {
		if got := exitCode(teledock(t, c.args...).err); got != c.code {
			t.Errorf("teledock %v exited %d, want %d", c.args, got, c.code)
		}
	}

	// status --watch -o json: one line now (not running), one when connected, one after quit.
	cmd := exec.Command(cfg.teledock, "status", "--watch", "--name", conn, "-o", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	type status struct {
		SchemaVersion int
		Daemon        struct {
			Running bool
			Status  string
		}
	}
	lines := make(chan status, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var s status
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Errorf("a line that is not a JSON object: %q", sc.Text())
				continue
			}
			lines <- s
		}
		close(lines)
	}()
	waitFor := func(what string, ok func(status) bool) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		for {
			select {
			case s, open := <-lines:
				if !open {
					t.Fatalf("the stream ended before %s", what)
				}
				if ok(s) {
					return
				}
			case <-deadline:
				t.Fatalf("no status line with %s", what)
			}
		}
	}
	waitFor("the daemon not running", func(s status) bool { return s.SchemaVersion == 1 && !s.Daemon.Running })
	connectAs(t, ns, conn)
	waitFor("the session connected", func(s status) bool { return s.Daemon.Running && s.Daemon.Status == "connected" })
	must(t, teledock(t, "quit", "--name", conn), "quit")
	waitFor("the daemon gone again", func(s status) bool { return !s.Daemon.Running })
	fmt.Println("status --watch followed connect and quit")
}
