//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// When the agent cannot arrive (here: its image is not on the node), intercept fails within its
// deadline, says why from the pod's state, and takes nothing over.
func TestInterceptExplainsAMissingAgent(t *testing.T) {
	mgr := fmt.Sprintf("e2e-noagent-%d", time.Now().UnixNano()%1e6)
	args := []string{"--kubeconfig", cfg.kubeconfig, "--manager-namespace", mgr}
	// Its webhook would inject the missing agent into every later test's annotated workloads.
	uninstallWhenDone(t, mgr, args)
	must(t, teledock(t, append(append([]string{"install"}, args...), "--image", image("traffic-manager"),
		"--agent-image", "teledock/traffic-agent:does-not-exist")...), "install a manager with a missing agent image")

	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", mgr, "--image", image("daemon")), "connect")

	start := time.Now()
	r := teledock(t, "intercept", "echo", "--port", "8080:http", "--timeout", "40s", "--name", conn)
	if r.err == nil {
		t.Fatalf("intercept succeeded with an agent image that does not exist:\n%s", r.stdout)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("intercept took %s to fail with --timeout 40s", took)
	}
	if !strings.Contains(r.stderr, "does-not-exist") && !strings.Contains(r.stderr, "ErrImageNeverPull") {
		t.Errorf("the error does not say the agent's image is missing:\n%s", r.stderr)
	}
	// The cluster is as it was: the workload's template loses the rollout annotation again.
	eventually(t, 60*time.Second, "the workload's template restored", func() error {
		if a := jsonpath(t, ns, "deployment/echo", "{.spec.template.metadata.annotations}"); strings.Contains(a, "teledock.dev/agent-rollout") {
			return fmt.Errorf("annotations: %s", a)
		}
		return nil
	})
	// Nothing was taken over: the Service still answers from the app (through teledock's own view).
	out := must(t, inCluster(t, conn, "http", "http://echo/"), "GET http://echo/")
	if !strings.HasPrefix(out, app.Text) {
		t.Errorf("after a failed intercept http://echo/ = %q, want the app", out)
	}
}

// TestWebhookUnreachableDuringRollout: the API server cannot reach the agent injector (its
// webhook points at a port nobody serves) while an intercept rolls the workload out. The webhook's
// failurePolicy is Ignore, so the pods start anyway, without an agent; the intercept fails within
// its deadline and says that the injector was not called and what to check. Once the webhook is
// reachable again, the same intercept works.
func TestWebhookUnreachableDuringRollout(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	conn := connect(t, ns)

	webhook := "mutatingwebhookconfiguration/teledock-agent-injector-" + managerNamespace
	port := strings.TrimSpace(must(t, kubectl(t, "get", webhook, "-o", "jsonpath={.webhooks[0].clientConfig.service.port}"), "the webhook's port"))
	setPort := func(p string) cmdResult {
		return kubectl(t, "patch", webhook, "--type=json", "-p",
			`[{"op":"replace","path":"/webhooks/0/clientConfig/service/port","value":`+p+`}]`)
	}
	// The API server takes up a changed webhook configuration a moment later. Until then it still
	// calls the injector, which warns, naming its manager, about a pod with a bad
	// inject-container-ports annotation (a server-side dry run: nothing is created).
	ours := "teledock (manager " + managerNamespace + "): traffic-agent not injected"
	injectorWarns := func() (bool, error) {
		r := kubectl(t, "-n", ns, "run", "webhook-probe", "--image=none", "--restart=Never", "--dry-run=server",
			"--annotations=teledock.dev/inject-container-ports=,,", "-o", "name")
		if r.err != nil {
			return false, fmt.Errorf("dry run: %v\n%s", r.err, r.stderr)
		}
		return strings.Contains(r.stderr, ours), nil
	}
	if warns, err := injectorWarns(); err != nil || !warns {
		t.Fatalf("the reachable injector did not warn about a bad annotation (%v)", err)
	}
	t.Cleanup(func() { setPort(port) })
	must(t, setPort("1"), "point the webhook at a port nobody serves")
	eventually(t, 30*time.Second, "the API server no longer calls the injector", func() error {
		warns, err := injectorWarns()
		if err == nil && warns {
			err = errors.New("the injector still answers")
		}
		return err
	})

	start := time.Now()
	r := teledock(t, "intercept", "echo", "--port", "8080:http", "--timeout", "40s", "--name", conn)
	if r.err == nil {
		t.Fatalf("intercept succeeded although the agent injector cannot be reached:\n%s", r.stdout)
	}
	t.Logf("intercept failed after %.1fs (exit %d): %s", time.Since(start).Seconds(), exitCode(r.err), strings.TrimSpace(r.stderr))
	if !strings.Contains(r.stderr, "agent injector was not called") {
		t.Errorf("the error does not say that the agent injector was not reached:\n%s", r.stderr)
	}
	// The pods the rollouts made (the intercept's, then the undoing of its template change) started
	// without the agent, and the app serves.
	eventually(t, 60*time.Second, "the workload's template restored", func() error {
		if a := jsonpath(t, ns, "deployment/echo", "{.spec.template.metadata.annotations}"); strings.Contains(a, "teledock.dev/agent-rollout") {
			return fmt.Errorf("annotations: %s", a)
		}
		return nil
	})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/echo", "--timeout=90s"), "the rollout without the webhook")
	if c := jsonpath(t, ns, "pods -l app=echo", "{.items[*].spec.containers[*].name}"); strings.Contains(c, "traffic-agent") {
		t.Errorf("a pod has a traffic-agent although the injector was not reachable: %s", c)
	}
	restored := time.Now()
	eventually(t, 60*time.Second, "the app answers", func() error {
		// Endpoints follow the rollout's last pod change a moment later.
		if r := inCluster(t, conn, "http", "http://echo/"); r.err != nil || !strings.HasPrefix(r.stdout, app.Text) {
			return fmt.Errorf("http://echo/ = %q %v %s\n%s\n%s\n%s", r.stdout, r.err, r.stderr,
				kubectl(t, "-n", ns, "get", "pods,endpointslices", "-o", "wide").stdout,
				docker(t, "logs", "--tail", "30", "teledock-daemon-"+conn).stderr,
				run(t, 10*time.Second, "sh", "-c", "iptables-save | grep -i "+ns).stdout)
		}
		return nil
	})

	answered := time.Since(restored)
	t.Logf("the app answered %.1fs after the rollouts were done", answered.Seconds())
	// 31 s before the manager's dials started over on a new socket: the first connection picked
	// the pod that the rollout had just removed and waited for the whole dial deadline.
	if answered > 15*time.Second {
		t.Errorf("the app answered %.1fs after the rollouts, want within 15s", answered.Seconds())
	}
	must(t, setPort(port), "restore the webhook's port")
	out := must(t, teledock(t, "intercept", "echo", "--port", "8080:http", "--name", conn), "intercept once the webhook is back")
	t.Logf("with the webhook back:\n%s", out)
	must(t, teledock(t, "leave", "echo", "--name", conn), "leave")
}
