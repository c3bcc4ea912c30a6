//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// One namespace with a workload per section of the seed document, one connection, and a client
// pod that makes the requests the cluster would make. Subtests run in order and each leaves its
// intercepts. Every assertion on intercepted traffic needs an answer only the local handler gives.
func TestIntercept(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "intercept.yaml", echoApp{Image: image("echo")})
	for _, w := range []string{"deployment/named", "deployment/numeric", "deployment/multi", "statefulset/my-headless", "deployment/echo-no-svc"} {
		must(t, kubectl(t, "-n", ns, "rollout", "status", w, "--timeout=120s"), "rollout of "+w)
	}
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod", "-l", "app=echo-rs", "--timeout=120s"), "echo-rs pod ready")
	conn := connect(t, ns)

	t.Run("list before any intercept", func(t *testing.T) {
		out := must(t, teledock(t, "list", "--name", conn), "list")
		for _, w := range []string{"named", "numeric", "multi", "echo-rs", "my-headless"} {
			if !strings.Contains(out, w+": ready to intercept (traffic-agent not yet installed)") {
				t.Errorf("list lacks %q ready to intercept:\n%s", w, out)
			}
		}
		// The annotated workload got its agent when it was deployed.
		if !strings.Contains(out, "echo-no-svc: ready to intercept (traffic-agent already installed)") {
			t.Errorf("list does not show the annotated workload with its agent:\n%s", out)
		}
		if c := jsonpath(t, ns, "pods -l app=echo-no-svc", "{.items[*].spec.containers[*].name}"); !strings.Contains(c, "traffic-agent") {
			t.Errorf("the annotated workload's pods have no traffic-agent after deploy: %s", c)
		}
	})

	t.Run("named targetPort, status and leave", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		text := ic.handler("h-named", 8080)
		podBefore := podsOf(t, ns, "app=named")
		out := ic.intercept("named", "--port", "8080:http")
		wantBlock(t, out, "Using Deployment named", map[string]string{
			"Intercept name": "named", "State": "ACTIVE", "Workload kind": "Deployment",
			"Destination": "127.0.0.1:8080", "Service Port Identifier": "http", "Intercepting": "all TCP connections",
		})
		ic.wantFromCluster("http://named/", text)
		ic.wantFromCluster("http://named."+ns+".svc.cluster.local/", text)

		st := must(t, teledock(t, "status", "--name", conn), "status")
		if !regexp.MustCompile(`Intercepts\s*: 1 total`).MatchString(st) || !regexp.MustCompile(`(?m)^\s+named: \S+`).MatchString(st) {
			t.Errorf("status does not list the intercept:\n%s", st)
		}
		list := must(t, teledock(t, "list", "--name", conn), "list")
		if !regexp.MustCompile(`named: intercepted`).MatchString(list) {
			t.Errorf("list does not show named as intercepted:\n%s", list)
		}

		podIntercepted := podsOf(t, ns, "app=named")
		must(t, teledock(t, "leave", "named", "--name", conn), "leave")
		ic.wantFromCluster("http://named/", "cluster named from named-")
		if after := podsOf(t, ns, "app=named"); after != podIntercepted {
			t.Errorf("leave restarted pods: %s -> %s", podIntercepted, after)
		}
		if podBefore == podIntercepted {
			t.Logf("note: the first intercept did not need a rollout (agent already present)")
		}
		list = must(t, teledock(t, "list", "--name", conn), "list")
		if !strings.Contains(list, "named: ready to intercept (traffic-agent already installed)") {
			t.Errorf("after leave, list:\n%s", list)
		}
	})

	t.Run("numeric targetPort", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		text := ic.handler("h-numeric", 8081)
		out := ic.intercept("numeric", "--port", "8081")
		wantBlock(t, out, "Using Deployment numeric", map[string]string{"Destination": "127.0.0.1:8081"})
		ic.wantFromCluster("http://numeric/", text)
	})

	t.Run("two ports of one workload", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		httpText := ic.handler("h-multi-http", 8082)
		extraText := ic.handler("h-multi-extra", 8083)
		out := ic.intercept("multi-http", "--workload", "multi", "--port", "8082:http")
		wantBlock(t, out, "Using Deployment multi", map[string]string{"Intercept name": "multi-http", "Service Port Identifier": "http"})
		out = ic.intercept("multi-extra", "--workload", "multi", "--port", "8083:extra", "--mechanism", "tcp")
		wantBlock(t, out, "Using Deployment multi", map[string]string{"Intercept name": "multi-extra", "Service Port Identifier": "extra"})
		ic.wantFromCluster("http://multi/", httpText)
		ic.wantFromCluster("http://multi:9090/", extraText)
	})

	t.Run("several services need --service", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		r := teledock(t, "intercept", "echo-rs", "--port", "8084", "--name", conn)
		if r.err == nil || !strings.Contains(r.stderr, "--service") {
			t.Fatalf("intercept of a workload with two services without --service: err=%v\n%s", r.err, r.stderr)
		}
		text := ic.handler("h-rs", 8084)
		out := ic.intercept("echo-rs", "--port", "8084", "--service", "echo-stable")
		wantBlock(t, out, "Using ReplicaSet echo-rs", map[string]string{"Workload kind": "ReplicaSet"})
		ic.wantFromCluster("http://echo-stable/", text)
	})

	t.Run("headless StatefulSet", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		text := ic.handler("h-headless", 8085)
		out := ic.intercept("my-headless", "--port", "8085:8080")
		wantBlock(t, out, "Using StatefulSet my-headless", map[string]string{"Workload kind": "StatefulSet"})
		ic.wantFromCluster("http://my-headless-0.my-headless:8080/", text)
	})

	t.Run("service-less annotated workload", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		list := must(t, teledock(t, "list", "--name", conn), "list")
		if !strings.Contains(list, "echo-no-svc: ready to intercept") {
			t.Errorf("list lacks the annotated service-less workload:\n%s", list)
		}
		text := ic.handler("h-no-svc", 8086)
		out := ic.intercept("echo-no-svc", "--port", "8086:http")
		fields := wantBlock(t, out, "Using Deployment echo-no-svc", map[string]string{"Intercept name": "echo-no-svc"})
		addr := fields["Address"]
		if !regexp.MustCompile(`^10\.244\.\d+\.\d+:8080$`).MatchString(addr) {
			t.Fatalf("Address = %q, want the pod's IP:8080", addr)
		}
		ic.wantFromCluster("http://"+addr+"/", text)
	})

	t.Run("address of another container", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		// A handler that is not in the daemon's namespace: a plain container on Docker's network.
		name := "e2e-addr-" + ns[len(ns)-6:]
		text := "answered by container " + name
		must(t, docker(t, "run", "-d", "--name", name, "-e", "ECHO_TEXT="+text, "-e", "PORT=8087", image("echo")), "start the address handler")
		t.Cleanup(func() { docker(t, "rm", "-f", name) })
		out := ic.intercept("numeric", "--port", "8087", "--address", name)
		fields := wantBlock(t, out, "Using Deployment numeric", nil)
		if !regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+:8087$`).MatchString(fields["Destination"]) {
			t.Errorf("Destination = %q, want the container's IP:8087", fields["Destination"])
		}
		ic.wantFromCluster("http://numeric/", text)
	})

	t.Run("to-pod reaches the sidecar", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		ic.handler("h-topod", 8088)
		ic.intercept("named", "--port", "8088:http", "--to-pod", "9090", "--to-pod", "9091/UDP")
		out := must(t, inCluster(t, conn, "http", "http://127.0.0.1:9090/"), "GET the pod's localhost:9090")
		if !strings.HasPrefix(out, "cluster sidecar from named-") {
			t.Errorf("localhost:9090 through --to-pod = %q, want the sidecar", out)
		}
		out = must(t, inCluster(t, conn, "udp", "127.0.0.1:9091", "hi"), "UDP to the pod's localhost:9091")
		if strings.TrimSpace(out) != "cluster sidecar: hi" {
			t.Errorf("UDP through --to-pod = %q", out)
		}
	})

	t.Run("env import", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		dir := t.TempDir()
		envFile, jsonFile := dir+"/env", dir+"/env.json"
		ic.intercept("named", "--port", "8089:http", "-e", envFile, "-j", jsonFile)
		env, err := os.ReadFile(envFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"FROM_SECRET=s3cr3t-value", "FROM_CONFIGMAP=blue", "CFG_color=blue",
			"POD_NAMESPACE=" + ns, "PLAIN=plain-" + ns, "NAMED_SERVICE_HOST=", "NAMED_SERVICE_PORT=80"} {
			if !strings.Contains(string(env), want) {
				t.Errorf("env file lacks %q:\n%s", want, env)
			}
		}
		var m map[string]string
		data, _ := os.ReadFile(jsonFile)
		if err := json.Unmarshal(data, &m); err != nil || m["FROM_SECRET"] != "s3cr3t-value" {
			t.Errorf("env json: %v %v", err, m)
		}
	})

	t.Run("docker-run handler gets the env and ends the intercept", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		cmd := exec.Command(cfg.teledock, "intercept", "named", "--port", "8090:http", "--name", conn,
			"--docker-run", "--", "-e", "PORT=8090", "-e", "ECHO_TEXT=docker-run handler", image("echo"))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); teledock(t, "leave", "named", "--name", conn) })
		ic.wantFromCluster("http://named/", "docker-run handler")
		got := must(t, fromCluster(t, ns, "http", "http://named/env/FROM_SECRET"), "the handler's env")
		if strings.TrimSpace(got) != "s3cr3t-value" {
			t.Errorf("the handler's FROM_SECRET = %q, want the Secret's value", got)
		}
		must(t, docker(t, "stop", "named"), "stop the handler container")
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("intercept --docker-run did not end when its container stopped:\n%s", out.String())
		}
		ic.wantFromCluster("http://named/", "cluster named from named-")
	})

	t.Run("replace and restore", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		text := ic.handler("h-replace", 8091)
		ic.intercept("numeric", "--port", "8091", "--replace")
		ic.wantFromCluster("http://numeric/", text)
		images := jsonpath(t, ns, "pods -l app=numeric", `{.items[*].spec.containers[?(@.name=="app")].args}`)
		if !strings.Contains(images, "sleep") {
			t.Errorf("with --replace the app container should sleep; its args: %q", images)
		}
		must(t, teledock(t, "leave", "numeric", "--name", conn), "leave")
		eventually(t, 120*time.Second, "the app container is restored", func() error {
			r := fromCluster(t, ns, "http", "http://numeric/")
			if r.err != nil || !strings.HasPrefix(r.stdout, "cluster numeric from numeric-") {
				return fmt.Errorf("GET http://numeric/ = %q %v", r.stdout, r.err)
			}
			return nil
		})
	})

	t.Run("errors leave the cluster unchanged", func(t *testing.T) {
		ic := interceptor{t: t, ns: ns, conn: conn}
		for _, c := range []struct {
			name string
			args []string
			want string
		}{
			{"unknown workload", []string{"no-such-workload", "--port", "8092"}, "no-such-workload"},
			{"port identifier not found", []string{"named", "--port", "8092:nope"}, "nope"},
		} {
			r := teledock(t, append(append([]string{"intercept"}, c.args...), "--name", conn)...)
			if r.err == nil || !strings.Contains(r.stderr, c.want) {
				t.Errorf("%s: err=%v, stderr does not name %q:\n%s", c.name, r.err, c.want, r.stderr)
			}
		}
		ic.handler("h-busy", 8093)
		ic.intercept("named", "--port", "8093:http")
		r := teledock(t, "intercept", "multi-http", "--workload", "multi", "--port", "8093:http", "--name", conn)
		if r.err == nil || !strings.Contains(r.stderr, "8093") {
			t.Errorf("a second intercept on a used local port: err=%v\n%s", r.err, r.stderr)
		}
		// Another client may not take a workload this one intercepts.
		other := connectAs(t, ns, connName(t, "-other"))
		r = teledock(t, "intercept", "named", "--port", "8094:http", "--name", other)
		if r.err == nil || !strings.Contains(r.stderr, "intercepted") {
			t.Errorf("a second client intercepting the same workload: err=%v\n%s", r.err, r.stderr)
		}
	})

	// An agent keeps one session for as long as it runs: its heartbeats reach the manager through
	// the Service. A session lost and made again would reset the intercepted connections.
	t.Run("agents keep their session", func(t *testing.T) {
		const minAge = 25 * time.Second // two and a half leases
		var pod string
		var started time.Time
		for _, line := range strings.Split(jsonpath(t, ns, "pods",
			`{range .items[*]}{.metadata.name} {.status.containerStatuses[?(@.name=="traffic-agent")].state.running.startedAt}{"\n"}{end}`), "\n") {
			name, at, ok := strings.Cut(strings.TrimSpace(line), " ")
			ts, err := time.Parse(time.RFC3339, at)
			if ok && err == nil && (pod == "" || ts.Before(started)) {
				pod, started = name, ts
			}
		}
		if pod == "" {
			t.Fatal("no running traffic-agent in the namespace")
		}
		// Time must pass here, not readiness: the agent has to outlive its lease.
		time.Sleep(time.Until(started.Add(minAge)))
		logs := must(t, kubectl(t, "-n", ns, "logs", pod, "-c", "traffic-agent"), "agent logs")
		if n := strings.Count(logs, "arrived at the traffic-manager"); n != 1 {
			t.Errorf("the agent of %s arrived %d times in %s, want once:\n%s", pod, n, time.Since(started).Round(time.Second), logs)
		}
	})
}

type interceptor struct {
	t    *testing.T
	ns   string
	conn string
}

// handler starts a handler container in the connection's namespace listening on port, and returns
// the text only it answers with.
func (ic interceptor) handler(name string, port int) string {
	ic.t.Helper()
	cname := name + "-" + ic.ns[len(ic.ns)-6:]
	text := "answered locally by " + cname
	must(ic.t, teledock(ic.t, "run", "--connection", ic.conn, "-d", "--name", cname,
		"-e", fmt.Sprintf("PORT=%d", port), "-e", fmt.Sprintf("UDP_PORT=%d", port+1000), "-e", "ECHO_TEXT="+text, image("echo")), "start handler "+cname)
	ic.t.Cleanup(func() { docker(ic.t, "rm", "-f", cname) })
	return text
}

// intercept runs `teledock intercept NAME ARGS` and leaves it when the test ends.
func (ic interceptor) intercept(name string, args ...string) string {
	ic.t.Helper()
	ic.t.Cleanup(func() { teledock(ic.t, "leave", name, "--name", ic.conn) })
	r := teledock(ic.t, append(append([]string{"intercept", name}, args...), "--name", ic.conn)...)
	return must(ic.t, r, "intercept "+name)
}

// wantFromCluster polls a GET from the client pod until its answer starts with prefix.
func (ic interceptor) wantFromCluster(url, prefix string) {
	ic.t.Helper()
	eventually(ic.t, 90*time.Second, "GET "+url+" from the cluster answers "+prefix, func() error {
		r := fromCluster(ic.t, ic.ns, "http", url)
		if r.err != nil || !strings.HasPrefix(r.stdout, prefix) {
			return fmt.Errorf("got %q (%v) %s", r.stdout, r.err, r.stderr)
		}
		return nil
	})
}

// fromCluster runs /probe ARGS in the client pod.
func fromCluster(t testing.TB, ns string, args ...string) cmdResult {
	t.Helper()
	return kubectl(t, append([]string{"-n", ns, "exec", "client", "--", "/probe", "-timeout", "10s"}, args...)...)
}

// podsOf names the pods of a selector with their UIDs and restart counts, to detect restarts.
func podsOf(t testing.TB, ns, selector string) string {
	t.Helper()
	return jsonpath(t, ns, "pods -l "+selector, `{range .items[*]}{.metadata.name}/{.metadata.uid}/{.status.containerStatuses[*].restartCount} {end}`)
}

var blockLine = regexp.MustCompile(`^\s+([A-Za-z][A-Za-z ]*?)\s*: (.*)$`)

// wantBlock checks the intercept output: the "Using Kind name" line and the block's fields.
func wantBlock(t testing.TB, out, using string, want map[string]string) map[string]string {
	t.Helper()
	if !strings.Contains(out, using) {
		t.Errorf("intercept output lacks %q:\n%s", using, out)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := blockLine.FindStringSubmatch(line); m != nil {
			fields[m[1]] = strings.TrimSpace(m[2])
		}
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("intercept output: %s = %q, want %q\n%s", k, fields[k], v, out)
		}
	}
	return fields
}

// A UDP service port is intercepted like a TCP one: datagrams sent to the Service reach the
// handler's UDP socket and its answers come back.
func TestInterceptUDP(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	must(t, kubectl(t, "-n", ns, "run", "client", "--image", image("echo"), "--image-pull-policy=Never"), "client pod")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	conn := connect(t, ns)
	ic := interceptor{t: t, ns: ns, conn: conn}
	// The handler's UDP echo listens on 9081 (handler sets UDP_PORT to its port + 1000).
	text := ic.handler("h-udp", 8081)
	ic.intercept("echo", "--port", "9081:udp")
	eventually(t, 60*time.Second, "a UDP datagram to the Service reaches the handler", func() error {
		r := fromCluster(t, ns, "udp", "echo:8081", "ping")
		if r.err != nil || strings.TrimSpace(r.stdout) != text+": ping" {
			return fmt.Errorf("got %q (%v) %s", r.stdout, r.err, r.stderr)
		}
		return nil
	})
}
