//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// composeProject is a three-service project in a folder of its own: web intercepts the cluster's
// web-app and imports its env, worker only reaches the cluster, plain is untouched.
type composeProject struct {
	t        *testing.T
	dir      string
	name     string
	ns       string
	hostPort int
}

const composeFileTemplate = `name: %[1]s
x-teledock:
  kubeconfig: %[2]s
  namespace: %[3]s
  manager-namespace: %[4]s
services:
  web:
    image: %[5]s
    environment:
      PORT: "8080"
      UDP_PORT: "9081"
      ECHO_TEXT: answered by compose web
      MODE: from-compose
    ports: ["127.0.0.1:%[6]d:8080"]
    x-teledock:
      intercept: web-app
      port: "8080:http"
      env: import
  worker:
    image: %[5]s
    environment: {PORT: "8090", UDP_PORT: "9091", ECHO_TEXT: compose worker}
    x-teledock: {connect: true}
  plain:
    image: %[5]s
    environment: {ECHO_TEXT: plain local}
`

func newComposeProject(t *testing.T, ns, name string) *composeProject {
	t.Helper()
	p := &composeProject{t: t, dir: t.TempDir(), name: name, ns: ns, hostPort: freePort(t)}
	p.write(fmt.Sprintf(composeFileTemplate, name, cfg.kubeconfig, ns, managerNamespace, image("echo"), p.hostPort))
	// Whatever a failed test leaves, the project goes.
	t.Cleanup(func() {
		p.compose("down", "--timeout", "2")
		docker(t, "rm", "-f", "teledock-daemon-compose-"+name)
	})
	return p
}

func (p *composeProject) write(content string) {
	p.t.Helper()
	if err := os.WriteFile(filepath.Join(p.dir, "compose.yaml"), []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// teledock runs `teledock compose ARGS` in the project's folder.
func (p *composeProject) teledock(args ...string) cmdResult {
	p.t.Helper()
	return p.in(4*time.Minute, cfg.teledock, append([]string{"compose"}, args...)...)
}

// compose runs plain `docker compose ARGS` in the project's folder.
func (p *composeProject) compose(args ...string) cmdResult {
	p.t.Helper()
	return p.in(3*time.Minute, "docker", append([]string{"compose"}, args...)...)
}

func (p *composeProject) in(timeout time.Duration, name string, args ...string) cmdResult {
	p.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "PWD="+p.dir)
	done := make(chan cmdResult, 1)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() { err := cmd.Wait(); done <- cmdResult{stdout: out.String(), stderr: errb.String(), err: err} }()
	select {
	case r := <-done:
		return r
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		r := <-done
		r.err = fmt.Errorf("%s %v timed out after %s", name, args, timeout)
		return r
	}
}

// exec runs the probe in a service's container, with plain docker compose.
func (p *composeProject) probe(files []string, service string, args ...string) cmdResult {
	p.t.Helper()
	line := append(append([]string{}, files...), "exec", "-T", service, "/probe", "-timeout", "20s")
	return p.compose(append(line, args...)...)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type generatedOut struct {
	Project     string   `json:"project"`
	Connection  string   `json:"connection"`
	Container   string   `json:"container"`
	Override    string   `json:"override"`
	Command     []string `json:"command"`
	ComposeFile string   `json:"compose_file"`
	Services    []struct {
		Name      string `json:"name"`
		EnvFile   string `json:"env_file"`
		Intercept *struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"intercept"`
	} `json:"services"`
}

// The compose flow end to end: generate writes an override that plain docker compose runs; the
// cluster's requests reach the local web service with the pod's env; services reach each other
// and the cluster by name; the published port answers; both teledock compose down and plain
// docker compose down leave nothing behind.
func TestCompose(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "compose.yaml", echoApp{Image: image("echo")})
	deployEcho(t, ns, "backend")
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/web-app", "--timeout=120s"), "rollout of web-app")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	name := "e2e-compose-" + ns[len(ns)-6:]
	p := newComposeProject(t, ns, name)
	mgr := managerClient(t)
	conn := "compose-" + name

	var gen generatedOut
	t.Run("generate, then plain docker compose up", func(t *testing.T) {
		out := must(t, p.teledock("generate", "-o", "json"), "teledock compose generate")
		if err := json.Unmarshal([]byte(out), &gen); err != nil {
			t.Fatalf("generate -o json: %v\n%s", err, out)
		}
		if gen.Project != name || gen.Connection != conn || len(gen.Services) != 2 {
			t.Fatalf("generate said %+v", gen)
		}
		if ic := gen.Services[0].Intercept; gen.Services[0].Name != "web" || ic == nil || ic.Name != "web-app" || ic.State != "ACTIVE" {
			t.Errorf("web's intercept: %+v", gen.Services[0])
		}
		env, err := os.ReadFile(gen.Services[0].EnvFile)
		if err != nil || !strings.Contains(string(env), "FROM_SECRET=compose-s3cr3t") {
			t.Errorf("web's env file: %v\n%s", err, env)
		}
		if st, err := os.Stat(gen.Services[0].EnvFile); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("env file mode: %v %v", st.Mode(), err)
		}
		// The printed command is plain docker compose: no teledock in it.
		if gen.Command[0] != "docker" || gen.Command[1] != "compose" {
			t.Fatalf("command = %v", gen.Command)
		}
		must(t, p.compose(append(gen.Command[2:], "up", "-d")...), "docker compose up -d (without teledock)")
	})
	files := gen.Command[2:]

	t.Run("the cluster's requests reach the local service with the pod's env", func(t *testing.T) {
		wantFromClient(t, ns, "http://web-app/", "answered by compose web")
		// env: the Secret's value came from the pod; the compose file's own value wins over the pod's.
		wantFromClient(t, ns, "http://web-app/env/FROM_SECRET", "compose-s3cr3t")
		wantFromClient(t, ns, "http://web-app/env/MODE", "from-compose")
	})

	t.Run("the intercepted service has its pod's volumes", func(t *testing.T) {
		// Every pod mounts its ServiceAccount token; the override mounts the volume at that path.
		got := must(t, p.probe(files, "web", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"), "read the pod's volume in web")
		if got != ns {
			t.Errorf("web reads namespace %q from its pod's volume, want %s", got, ns)
		}
		wantFromClient(t, ns, "http://web-app/env/TELEDOCK_MOUNTS", "/var/run/secrets/kubernetes.io/serviceaccount")
	})

	t.Run("services reach the cluster and each other by name", func(t *testing.T) {
		wantOut(t, "worker -> backend (cluster name)", "hello from backend", func() cmdResult {
			return p.probe(files, "worker", "http", "http://backend/")
		})
		wantOut(t, "worker -> backend.NS.svc.cluster.local", "hello from backend", func() cmdResult {
			return p.probe(files, "worker", "http", "http://backend."+ns+".svc.cluster.local/")
		})
		wantOut(t, "plain -> web (marked, by service name)", "answered by compose web", func() cmdResult {
			return p.probe(files, "plain", "http", "http://web:8080/")
		})
		wantOut(t, "worker -> plain (unmarked, by service name)", "plain local", func() cmdResult {
			return p.probe(files, "worker", "http", "http://plain:8080/")
		})
		// Docker's own network cannot reach the cluster (see TestDockerCannotReachClusterDirectly):
		// the unmarked service gets no answer from a cluster name.
		if r := p.probe(files, "plain", "http", "http://backend."+ns+".svc.cluster.local/"); r.err == nil {
			t.Errorf("the unmarked service reached the cluster: %q", r.stdout)
		}
	})

	t.Run("the published port answers from the host", func(t *testing.T) {
		wantOut(t, "GET the published port", "answered by compose web", func() cmdResult {
			return httpGet(fmt.Sprintf("http://127.0.0.1:%d/", p.hostPort))
		})
	})

	t.Run("teledock compose down leaves nothing", func(t *testing.T) {
		must(t, p.teledock("down", "--timeout", "3"), "teledock compose down")
		p.wantNothingLeft(t, mgr, conn, true)
	})

	t.Run("teledock compose up, then plain docker compose down", func(t *testing.T) {
		must(t, p.teledock("up", "-d"), "teledock compose up -d")
		wantFromClient(t, ns, "http://web-app/", "answered by compose web")
		if _, err := os.Stat(gen.Services[0].EnvFile); err != nil {
			t.Fatalf("env file after up: %v", err)
		}
		must(t, p.compose(append(files, "down", "--timeout", "3")...), "docker compose down (without teledock)")
		p.wantNothingLeft(t, mgr, conn, false)
		// What plain compose cannot remove, quit does: the project's volumes.
		must(t, teledock(t, "quit", "--name", conn), "teledock quit the project's connection")
		if out := must(t, docker(t, "volume", "ls", "-q", "--filter", "label=teledock.dev/connection="+conn), "volume ls"); strings.TrimSpace(out) != "" {
			t.Errorf("volumes left after quit: %s", out)
		}
	})
}

// wantNothingLeft checks that a project is gone: no session (so no intercept) at the manager, the
// cluster's traffic back at the workload, no daemon container, no network, no env file.
func (p *composeProject) wantNothingLeft(t *testing.T, mgr managerv1.ManagerClient, conn string, filesGone bool) {
	t.Helper()
	eventually(t, 30*time.Second, "the project's session is gone from the manager", func() error {
		if n := sessionsNamed(t, mgr, conn); n != 0 {
			return fmt.Errorf("%d sessions named %s", n, conn)
		}
		return nil
	})
	wantFromClient(t, p.ns, "http://web-app/", "cluster web-app")
	envs, _ := filepath.Glob(filepath.Join(p.dir, ".teledock", p.name, "env", "*.env"))
	if len(envs) > 0 {
		t.Errorf("env files left: %v", envs)
	}
	p.wantNoDocker(t, filesGone)
}

// wantNoDocker checks that Docker has nothing of the project: no daemon container, no network, no
// container; and, with filesGone, that .teledock is gone too.
func (p *composeProject) wantNoDocker(t *testing.T, filesGone bool) {
	t.Helper()
	if r := docker(t, "inspect", "teledock-daemon-compose-"+p.name); r.err == nil {
		t.Errorf("the daemon container is still there")
	}
	for _, what := range [][]string{{"network", "ls", "-q"}, {"ps", "-aq"}} {
		out := must(t, docker(t, append(what, "--filter", "label=com.docker.compose.project="+p.name)...), strings.Join(what, " "))
		if strings.TrimSpace(out) != "" {
			t.Errorf("%s: left: %s", what[0], out)
		}
	}
	// Plain `docker compose down` cannot remove the volumes teledock made (they are external to
	// the project); teledock compose down does.
	if out := must(t, docker(t, "volume", "ls", "-q", "--filter", "label=teledock.dev/connection=compose-"+p.name), "volume ls"); filesGone && strings.TrimSpace(out) != "" {
		t.Errorf("volumes left: %s", out)
	}
	if _, err := os.Stat(filepath.Join(p.dir, ".teledock")); filesGone && err == nil {
		t.Errorf(".teledock is still there")
	}
}

// Bad projects fail before anything is made, with a message that names the problem.
func TestComposeErrors(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	name := "e2e-compose-err-" + ns[len(ns)-6:]
	p := newComposeProject(t, ns, name)

	cases := []struct {
		name, file, want string
	}{
		{"unknown workload", strings.Replace(fmt.Sprintf(composeFileTemplate, name, cfg.kubeconfig, ns, managerNamespace, image("echo"), p.hostPort),
			"intercept: web-app", "intercept: no-such-workload", 1), "no-such-workload"},
		{"network_mode host", strings.Replace(fmt.Sprintf(composeFileTemplate, name, cfg.kubeconfig, ns, managerNamespace, image("echo"), p.hostPort),
			"    x-teledock:\n      intercept: web-app", "    network_mode: host\n    x-teledock:\n      intercept: web-app", 1), "network_mode \"host\""},
		{"invalid x-teledock", strings.Replace(fmt.Sprintf(composeFileTemplate, name, cfg.kubeconfig, ns, managerNamespace, image("echo"), p.hostPort),
			"env: import", "env: everything", 1), "services.web.x-teledock.env"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p.write(c.file)
			r := p.teledock("generate")
			if r.err == nil || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("generate: err=%v, want a message with %q\nstdout:\n%s\nstderr:\n%s", r.err, c.want, r.stdout, r.stderr)
			}
			p.wantNoDocker(t, true)
		})
	}
}

// A daemon container of the project's name that is not the project's (here one that `teledock
// connect` made) is refused with a message, and left running.
func TestComposeDaemonOfAnotherProject(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	name := "e2e-compose-other-" + ns[len(ns)-6:]
	p := newComposeProject(t, ns, name)
	conn := connectAs(t, ns, "compose-"+name)
	r := p.teledock("generate")
	if r.err == nil || !strings.Contains(r.stderr, "is not a compose project's daemon") || !strings.Contains(r.stderr, "teledock quit --name "+conn) {
		t.Fatalf("generate: err=%v\n%s", r.err, r.stderr)
	}
	if st := status(t, conn); !st.Daemon.Running || !st.TrafficManager.Connected {
		t.Errorf("the other daemon after the refused generate: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(p.dir, ".teledock")); err == nil {
		t.Errorf(".teledock was left")
	}
}

// wantFromClient polls a GET from the cluster's client pod until the answer starts with prefix.
func wantFromClient(t *testing.T, ns, url, prefix string) {
	t.Helper()
	wantOut(t, "GET "+url+" from the cluster", prefix, func() cmdResult { return fromCluster(t, ns, "http", url) })
}

// wantOut polls f until its output starts with prefix.
func wantOut(t *testing.T, what, prefix string, f func() cmdResult) {
	t.Helper()
	eventually(t, 60*time.Second, what+" answers "+prefix, func() error {
		r := f()
		if r.err != nil || !strings.HasPrefix(r.stdout, prefix) {
			return fmt.Errorf("got %q (%v) %s", r.stdout, r.err, r.stderr)
		}
		return nil
	})
}

// httpGet GETs url on a new connection (freshClient): a kept-alive one could lead to whatever a
// recycled ClusterIP meant in an earlier test.
func httpGet(url string) cmdResult {
	return getWith(freshClient(5*time.Second), url)
}

const providerFileTemplate = `name: %[1]s
services:
  teledock:
    provider:
      type: teledock
      options:
        kubeconfig: %[2]s
        namespace: %[3]s
        manager-namespace: %[4]s
        intercept: web-app
        port: "8080:http"
        aliases: web
  web:
    image: %[5]s
    environment: {PORT: "8080", LOCAL_MARK: provider-local}
    network_mode: container:teledock-daemon-compose-%[1]s
    depends_on: [teledock]
  plain:
    image: %[5]s
    environment: {ECHO_TEXT: plain local}
`

// A provider service: plain `docker compose up` runs teledock, which connects, joins the project's
// networks and intercepts; the dependents get the pod's env; `docker compose down` undoes it all.
// LOCAL_MARK is set only on the local web service, so only it can answer with it.
func TestComposeProvider(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	apply(t, ns, "compose.yaml", echoApp{Image: image("echo")})
	must(t, kubectl(t, "-n", ns, "rollout", "status", "deployment/web-app", "--timeout=120s"), "rollout of web-app")
	must(t, kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s"), "client pod ready")
	name := "e2e-prov-" + ns[len(ns)-6:]
	p := newComposeProject(t, ns, name)
	p.write(fmt.Sprintf(providerFileTemplate, name, cfg.kubeconfig, ns, managerNamespace, image("echo")))
	// docker compose finds the provider as `teledock` on PATH.
	t.Setenv("PATH", filepath.Dir(cfg.teledock)+string(os.PathListSeparator)+os.Getenv("PATH"))
	mgr := managerClient(t)

	must(t, p.compose("up", "-d"), "docker compose up -d with a teledock provider service")
	wantFromClient(t, ns, "http://web-app/env/LOCAL_MARK", "provider-local")
	wantFromClient(t, ns, "http://web-app/env/FROM_SECRET", "compose-s3cr3t")
	wantOut(t, "plain -> web (by the daemon's alias)", "provider-local", func() cmdResult {
		return p.probe(nil, "plain", "http", "http://web:8080/env/LOCAL_MARK")
	})

	must(t, p.compose("down", "--timeout", "3"), "docker compose down")
	p.wantNothingLeft(t, mgr, "compose-"+name, true)
}
