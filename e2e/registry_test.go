//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The built-in cluster's registry (scripts/cluster/up.sh), which its containerd pulls from.
const clusterRegistry = "localhost:5001"

// registryTags lists a repository's tags in the cluster's registry.
func registryTags(t testing.TB, repo string) []string {
	t.Helper()
	resp, err := http.Get("http://" + clusterRegistry + "/v2/" + repo + "/tags/list")
	if err != nil {
		t.Fatalf("the cluster's registry: %v", err)
	}
	defer resp.Body.Close()
	var tags struct{ Tags []string }
	_ = json.NewDecoder(resp.Body).Decode(&tags)
	return tags.Tags
}

// TestInstallPushesToRegistry: `install --registry` pushes the traffic-manager and traffic-agent
// images of this build with Docker, installs with the registry's references, and the node pulls
// them from there: the manager runs, and an intercepted pod's agent is the pushed image.
func TestInstallPushesToRegistry(t *testing.T) {
	mgr := fmt.Sprintf("e2e-registry-%d", time.Now().UnixNano()%1e6)
	args := []string{"--kubeconfig", cfg.kubeconfig, "--manager-namespace", mgr}
	uninstallWhenDone(t, mgr, args)
	managerRef := clusterRegistry + "/teledock/traffic-manager:" + cfg.version
	agentRef := clusterRegistry + "/teledock/traffic-agent:" + cfg.version
	pulled := os.Geteuid() == 0
	if pulled {
		// Forget what an earlier run (or another test) pulled, so that the node must pull.
		run(t, 30*time.Second, "ctr", "--address", "/run/teledock-cluster/containerd/containerd.sock", "-n", "k8s.io",
			"images", "rm", managerRef, agentRef)
		for _, ref := range []string{managerRef, agentRef} {
			docker(t, "rmi", ref)
		}
	}

	r := teledock(t, append(append([]string{"install"}, args...), "--registry", clusterRegistry)...)
	must(t, r, "install --registry "+clusterRegistry)
	for _, ref := range []string{managerRef, agentRef} {
		if !strings.Contains(r.stderr, "Pushing "+ref) {
			t.Errorf("install did not say it pushed %s:\n%s", ref, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, managerRef) {
		t.Errorf("install's output does not name the pushed image %s:\n%s", managerRef, r.stdout)
	}
	for _, repo := range []string{"teledock/traffic-manager", "teledock/traffic-agent"} {
		if tags := registryTags(t, repo); !slices.Contains(tags, cfg.version) {
			t.Errorf("the registry's %s has tags %v, not %s", repo, tags, cfg.version)
		}
	}
	if img := jsonpath(t, mgr, "deployment/traffic-manager", "{.spec.template.spec.containers[0].image}"); img != managerRef {
		t.Errorf("the manager runs %s, want %s", img, managerRef)
	}
	if pulled {
		pod := jsonpath(t, mgr, "pods -l app.kubernetes.io/name=traffic-manager", "{.items[0].metadata.name}")
		eventually(t, 30*time.Second, "the node pulled the manager's image", func() error {
			ev := jsonpath(t, mgr, "events --field-selector involvedObject.name="+pod+",reason=Pulled", "{.items[*].message}")
			if !strings.Contains(ev, "Successfully pulled image \""+managerRef+"\"") {
				return fmt.Errorf("Pulled events: %q", ev)
			}
			return nil
		})
	}

	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", mgr, "--image", image("daemon")), "connect")
	must(t, teledock(t, "intercept", "echo", "--port", "8080:http", "--timeout", "90s", "--name", conn), "intercept")
	images := jsonpath(t, ns, "pods -l app=echo", "{.items[*].spec.containers[*].image}")
	if !strings.Contains(images, agentRef) {
		t.Errorf("the intercepted pod's containers run %s, want the agent %s among them", images, agentRef)
	}
}

// TestConnectLoadsItsDaemonImage: on an engine without the daemon image, `connect` (no --image)
// loads the one the CLI carries and connects.
func TestConnectLoadsItsDaemonImage(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	ref := image("daemon")
	// Untag it even if a stopped container still refers to it; the CLI brings it back.
	must(t, docker(t, "image", "rm", "-f", ref), "remove the daemon image")
	t.Cleanup(func() {
		if docker(t, "image", "inspect", ref).err != nil {
			t.Errorf("%s is missing after the test; other tests need it", ref)
		}
	})
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	r := teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn, "--manager-namespace", managerNamespace)
	must(t, r, "connect without the daemon image")
	if !strings.Contains(r.stderr, "Loading "+ref+" into the local Docker engine") {
		t.Errorf("connect did not say it loaded %s:\n%s", ref, r.stderr)
	}
	if s := status(t, conn); !s.Daemon.Running || !s.TrafficManager.Connected {
		t.Errorf("status after connect: %+v", s)
	}
	if img := strings.TrimSpace(must(t, docker(t, "inspect", "-f", "{{.Config.Image}}", "teledock-daemon-"+conn), "the daemon's image")); img != ref {
		t.Errorf("the daemon runs %s, want %s", img, ref)
	}
}

// TestInstallUsesTheAdvertisedRegistry: a plain `install` on a cluster that advertises a registry in
// kube-public/local-registry-hosting (the built-in one does) pushes there and installs with its
// references, so no image needs to be on the node beforehand.
func TestInstallUsesTheAdvertisedRegistry(t *testing.T) {
	mgr := fmt.Sprintf("e2e-advertised-%d", time.Now().UnixNano()%1e6)
	args := []string{"--kubeconfig", cfg.kubeconfig, "--manager-namespace", mgr}
	uninstallWhenDone(t, mgr, args)
	r := teledock(t, append([]string{"install"}, args...)...)
	must(t, r, "install")
	if !strings.Contains(r.stderr, "The cluster advertises the registry "+clusterRegistry) {
		t.Errorf("install did not say where it pushed:\n%s", r.stderr)
	}
	managerRef := clusterRegistry + "/teledock/traffic-manager:" + cfg.version
	if got := jsonpath(t, mgr, "deployment/traffic-manager", "{.spec.template.spec.containers[0].image}"); got != managerRef {
		t.Errorf("the manager runs %s, want %s", got, managerRef)
	}
	env := jsonpath(t, mgr, "deployment/traffic-manager", "{.spec.template.spec.containers[0].env}")
	if !strings.Contains(env, clusterRegistry+"/teledock/traffic-agent:"+cfg.version) {
		t.Errorf("the manager is not told to inject the pushed agent image: env %s", env)
	}
}
