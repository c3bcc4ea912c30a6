//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// handler is a background `teledock intercept vols --docker-run` whose container (the echo server,
// running as a non-root user) is named container.
type handler struct {
	t         *testing.T
	container string
	cmd       *exec.Cmd
	out       *strings.Builder
	done      chan error
}

func startHandler(t *testing.T, conn, container string, flags ...string) *handler {
	t.Helper()
	args := append([]string{"intercept", "vols", "--port", "8080", "--name", conn}, flags...)
	args = append(args, "--docker-run", "--", "--name", container, image("echo"))
	h := &handler{t: t, container: container, cmd: exec.Command(cfg.teledock, args...), out: &strings.Builder{}, done: make(chan error, 1)}
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		docker(t, "rm", "-f", container)
	})
	eventually(t, 90*time.Second, "the handler container runs", func() error {
		select {
		case err := <-h.done:
			h.done <- err
			return fmt.Errorf("intercept ended: %v\n%s", err, h.out.String())
		default:
		}
		return h.exec("cat", "/proc/self/status").err
	})
	return h
}

// exec runs /probe ARGS in the handler container.
func (h *handler) exec(args ...string) cmdResult {
	h.t.Helper()
	return docker(h.t, append([]string{"exec", h.container, "/probe", "-timeout", "30s"}, args...)...)
}

func (h *handler) cat(path string) string {
	h.t.Helper()
	return must(h.t, h.exec("cat", path), "read "+path+" in the handler")
}

// interrupt is Ctrl-C: teledock stops the container, leaves and removes the volumes.
func (h *handler) interrupt() {
	h.t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGINT); err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		h.t.Fatalf("intercept --docker-run did not end on Ctrl-C:\n%s", h.out.String())
	}
}

// volumesOf lists the Docker volumes teledock made for a connection: "NAME DRIVER" lines.
func volumesOf(t *testing.T, conn string) []string {
	t.Helper()
	out := must(t, docker(t, "volume", "ls", "-q", "--filter", "label=teledock.dev/connection="+conn, "--format", "{{.Name}} {{.Driver}}"), "docker volume ls")
	return strings.Fields(strings.ReplaceAll(out, "\n", " "))
}

// TestInterceptMounts: the intercepted container's mounts (a ConfigMap, a Secret, the
// ServiceAccount token, an emptyDir) appear in the --docker-run handler at the pod's paths, live
// through the volume plugin and as refreshed copies in copy mode; nothing is left after quit.
func TestInterceptMounts(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "volumes.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/vols", "--timeout=120s"), "rollout of vols")
	pod := jsonpath(t, ns, "pods -l app=vols", "{.items[0].metadata.name}")
	conn := connect(t, ns)

	checkReads := func(t *testing.T, h *handler) {
		t.Helper()
		if got := h.cat("/etc/config/color"); got != "blue" {
			t.Errorf("ConfigMap key = %q", got)
		}
		if got := h.cat("/var/run/secrets/app/token"); got != "vol-s3cr3t" {
			t.Errorf("Secret key = %q", got)
		}
		if got := h.cat("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); got != ns {
			t.Errorf("ServiceAccount namespace = %q", got)
		}
		if got := h.cat("/var/run/secrets/kubernetes.io/serviceaccount/token"); strings.Count(got, ".") != 2 {
			t.Errorf("ServiceAccount token is not a JWT: %q", got)
		}
		if r := h.exec("write", "/etc/config/new", "x"); r.err == nil {
			t.Error("a write into the read-only ConfigMap mount worked")
		}
		// The handler's env says where the mounts are, as Telepresence's does.
		mounts := must(t, h.exec("http", "http://127.0.0.1:8080/env/TELEPRESENCE_MOUNTS"), "TELEPRESENCE_MOUNTS")
		for _, p := range []string{"/etc/config", "/var/run/secrets/app", "/cache", "/var/run/secrets/kubernetes.io/serviceaccount"} {
			if !strings.Contains(mounts, p) {
				t.Errorf("TELEPRESENCE_MOUNTS = %q, want %s in it", mounts, p)
			}
		}
	}

	t.Run("plugin", func(t *testing.T) {
		h := startHandler(t, conn, "vols-plugin", "--mount-mode", "plugin")
		checkReads(t, h)
		vols := volumesOf(t, conn)
		if len(vols) != 8 || !strings.HasPrefix(vols[1], "teledock/volumes:") {
			t.Errorf("volumes %q, want 4 of the teledock plugin", vols)
		}
		// Live: a write by the handler is what the app container reads.
		must(t, h.exec("write", "/cache/from-handler", "written by the handler"), "write into the emptyDir")
		got := must(t, kubectl(t, "-n", ns, "exec", pod, "-c", "app", "--", "/probe", "cat", "/cache/from-handler"), "read it in the pod")
		if got != "written by the handler" {
			t.Errorf("the app container reads %q", got)
		}
		// Another container gets the same volumes with run --intercept.
		out := must(t, teledock(t, "run", "--connection", conn, "--intercept", "vols", "--rm", "--entrypoint", "/probe", image("echo"), "cat", "/cache/from-handler"), "run --intercept")
		if out != "written by the handler" {
			t.Errorf("run --intercept reads %q", out)
		}

		// Ctrl-C: the intercept and its volumes go, and the next intercept mounts at once.
		h.interrupt()
		if vols := volumesOf(t, conn); len(vols) != 0 {
			t.Errorf("volumes after Ctrl-C: %q", vols)
		}
		h2 := startHandler(t, conn, "vols-plugin-2")
		checkReads(t, h2)

		// The session dies with the daemon container: a read fails within seconds, never hangs.
		h2.cat("/var/run/secrets/app/token")
		must(t, docker(t, "kill", "teledock-daemon-"+conn), "kill the daemon container")
		start := time.Now()
		r := h2.exec("cat", "/var/run/secrets/app/token")
		took := time.Since(start)
		t.Logf("a read after the daemon was killed failed after %s: %v %s", took, r.err, r.stderr)
		if r.err == nil {
			t.Errorf("a read after the session died worked: %q", r.stdout)
		}
		if took > 15*time.Second {
			t.Errorf("the read failed only after %s", took)
		}
		docker(t, "rm", "-f", "vols-plugin-2")
		must(t, teledock(t, "quit", "--name", conn), "quit")
		if vols := volumesOf(t, conn); len(vols) != 0 {
			t.Errorf("volumes after quit: %q", vols)
		}
		if out := must(t, docker(t, "plugin", "ls", "--format", "{{.Name}}"), "docker plugin ls"); strings.Contains(out, "teledock") {
			t.Errorf("plugins after quit: %q", out)
		}
		// Connect again for the next subtests (the test's cleanup quits it).
		must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
			"--manager-namespace", managerNamespace, "--image", image("daemon")), "teledock connect")
		// The killed session's intercept lasts until its lease runs out.
		eventually(t, 60*time.Second, "the killed session's intercept ends", func() error {
			if out := must(t, teledock(t, "list", "--name", conn), "list"); strings.Contains(out, "intercepted") {
				return fmt.Errorf("still intercepted:\n%s", out)
			}
			return nil
		})
	})

	t.Run("copy", func(t *testing.T) {
		h := startHandler(t, conn, "vols-copy", "--mount-mode", "copy")
		checkReads(t, h)
		vols := volumesOf(t, conn)
		if len(vols) != 8 || vols[1] != "local" {
			t.Errorf("volumes %q, want 4 local ones", vols)
		}
		// A ConfigMap update reaches the copy (the kubelet's sync, then the helper's refresh).
		must(t, kubectl(t, "-n", ns, "patch", "configmap", "vols-config", "-p", `{"data":{"color":"green"}}`), "update the ConfigMap")
		start := time.Now()
		eventually(t, 3*time.Minute, "the ConfigMap update in the handler", func() error {
			if got := h.cat("/etc/config/color"); got != "green" {
				return fmt.Errorf("color = %q", got)
			}
			return nil
		})
		t.Logf("the ConfigMap update arrived after %s", time.Since(start))
		h.interrupt()
		if vols := volumesOf(t, conn); len(vols) != 0 {
			t.Errorf("volumes after Ctrl-C: %q", vols)
		}
		if out := must(t, docker(t, "ps", "-aq", "--filter", "label=teledock.dev/connection="+conn, "--filter", "label=teledock.dev/mount-mode=copy"), "docker ps"); out != "" {
			t.Errorf("copy helper left: %q", out)
		}
	})

	t.Run("mount false", func(t *testing.T) {
		out := must(t, teledock(t, "intercept", "vols", "--port", "8080", "--name", conn, "--mount=false", "-o", "json"), "intercept --mount=false")
		defer teledock(t, "leave", "vols", "--name", conn)
		var j map[string]any
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatal(err)
		}
		if j["volume_mount_point"] != nil || j["volumes"] != nil {
			t.Errorf("--mount=false: %s", out)
		}
		if vols := volumesOf(t, conn); len(vols) != 0 {
			t.Errorf("volumes with --mount=false: %q", vols)
		}
	})

	t.Run("uninstall --agents removes the cluster's volumes", func(t *testing.T) {
		must(t, teledock(t, "intercept", "vols", "--port", "8080", "--name", conn), "intercept with volumes")
		if vols := volumesOf(t, conn); len(vols) != 8 {
			t.Fatalf("volumes %q, want 4", vols)
		}
		must(t, teledock(t, "uninstall", "--agents", "--kubeconfig", cfg.kubeconfig, "--manager-namespace", managerNamespace), "uninstall --agents")
		if vols := volumesOf(t, conn); len(vols) != 0 {
			t.Errorf("volumes after uninstall --agents: %q", vols)
		}
		teledock(t, "leave", "vols", "--name", conn)
	})

	t.Run("bad flags", func(t *testing.T) {
		r := teledock(t, "intercept", "vols", "--name", conn, "--mount-mode", "nfs")
		if r.err == nil || !strings.Contains(r.stderr, "auto, plugin or copy") {
			t.Errorf("--mount-mode nfs: %v %s", r.err, r.stderr)
		}
		r = teledock(t, "intercept", "vols", "--name", conn, "--mount=relative/dir")
		if r.err == nil || !strings.Contains(r.stderr, "absolute folder") {
			t.Errorf("--mount relative/dir: %v %s", r.err, r.stderr)
		}
		if out := must(t, teledock(t, "list", "--name", conn), "list"); strings.Contains(out, "intercepted") {
			t.Errorf("a refused intercept was made: %s", out)
		}
	})
}
