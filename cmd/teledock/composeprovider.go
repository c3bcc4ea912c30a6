package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"teledock.dev/teledock/compose"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/version"
)

// composeProviderEnv is set by docker compose (>= 2.36) when it runs a provider service's plugin:
// the message types it understands, comma-separated.
const composeProviderEnv = "COMPOSE_PROVIDER_MESSAGES"

// providerParams are the options a `provider: {type: teledock, options: ...}` service takes.
var providerParams = []struct{ name, desc string }{
	{"kubeconfig", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)"},
	{"context", "kubeconfig context (default the current context)"},
	{"namespace", "namespace of the workloads (default the context's)"},
	{"manager-namespace", "namespace of the traffic-manager (default teledock)"},
	{"transport", "auto, port-forward or direct"},
	{"intercept", "workload whose traffic comes to the services that use the daemon's network"},
	{"name", "intercept name (default: the workload)"},
	{"port", "LOCAL[:SVCPORT], as `teledock intercept --port`"},
	{"service", "the service to intercept, when several select the workload"},
	{"to-pod", "PORT[/UDP] of the pod's localhost to reach at 127.0.0.1:PORT (repeatable)"},
	{"replace", "true: stop the intercepted container while the intercept lasts"},
	{"env", "import (default): the pod's environment goes to the services that depend on this one; none"},
	{"aliases", "comma-separated names that the daemon answers to on the project's networks (the services that use its network)"},
}

// providerMetadata is what `teledock compose metadata` prints for docker compose.
func providerMetadata(w io.Writer) error {
	type param struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Required    bool   `json:"required"`
		Type        string `json:"type"`
	}
	type command struct {
		Parameters []param `json:"parameters"`
	}
	var up command
	for _, p := range providerParams {
		up.Parameters = append(up.Parameters, param{Name: p.name, Description: p.desc, Type: "string"})
	}
	return json.NewEncoder(w).Encode(struct {
		Description string  `json:"description"`
		Up          command `json:"up"`
		Down        command `json:"down"`
	}{
		Description: "teledock: a daemon container whose network reaches a Kubernetes cluster; services join it with network_mode: container:teledock-daemon-compose-<project>",
		Up:          up,
		Down:        command{Parameters: []param{}},
	})
}

// providerIO writes docker compose's provider messages (JSON lines on stdout), only of the types
// the running compose understands.
type providerIO struct {
	w     io.Writer
	types []string
}

func (p providerIO) send(typ, msg string) {
	if !slices.Contains(p.types, typ) {
		return
	}
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}{typ, msg})
	_, _ = p.w.Write(append(b, '\n'))
}

// runComposeProvider is `teledock compose --project-name=P up|down [--opt=v ...] SERVICE`, as
// docker compose runs it for a provider service. Up connects a daemon for the project, joins it to
// the project's networks and intercepts; down removes it, which ends the session and the intercepts.
func runComposeProvider(ctx context.Context, d deps, ca composeArgs) error {
	out := providerIO{w: d.stdout, types: strings.Split(d.getenv(composeProviderEnv), ",")}
	err := composeProvider(ctx, d, ca, out)
	if err != nil {
		out.send("error", err.Error())
	}
	return err
}

func composeProvider(ctx context.Context, d deps, ca composeArgs, out providerIO) error {
	project := ca.load.ProjectName
	if project == "" || len(ca.args) == 0 {
		return errors.New("compose provider: docker compose passes --project-name and the service name")
	}
	opts := map[string][]string{}
	for _, a := range ca.args[:len(ca.args)-1] {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			return fmt.Errorf("compose provider: unexpected argument %q", a)
		}
		if !slices.ContainsFunc(providerParams, func(p struct{ name, desc string }) bool { return p.name == k }) {
			return fmt.Errorf("compose provider: unknown option %q (known: %s)", k, strings.Join(providerParamNames(), ", "))
		}
		opts[k] = append(opts[k], v)
	}
	one := func(k string) string {
		if v := opts[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	conn := "compose-" + project
	if err := launcher.ValidateName(conn); err != nil {
		return err
	}
	// The provider's own output is JSON lines on stdout; what the commands print goes to stderr.
	quiet := d
	quiet.stdout = d.stderr
	switch ca.command {
	case "down":
		out.send("info", "removing the teledock daemon "+launcher.ContainerName(conn))
		return runQuit(ctx, quiet, quitOptions{name: conn})
	case "up":
	default:
		return fmt.Errorf("compose provider: unsupported command %q", ca.command)
	}

	out.send("info", "connecting to the cluster")
	copts := connectOptions{
		kubeconfig: one("kubeconfig"), context: one("context"), namespace: one("namespace"),
		managerNamespace: cmp.Or(one("manager-namespace"), "teledock"), name: conn,
		image:     cmp.Or(d.getenv("TELEDOCK_DAEMON_IMAGE"), "teledock/daemon:"+version.Version),
		transport: cmp.Or(one("transport"), "auto"), timeout: 60 * time.Second,
	}
	if err := runConnect(ctx, quiet, copts); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = runQuit(context.WithoutCancel(ctx), quiet, quitOptions{name: conn})
		}
	}()
	if err := joinProjectNetworks(ctx, d, project, launcher.ContainerName(conn), strings.Split(one("aliases"), ",")); err != nil {
		return err
	}
	if w := one("intercept"); w != "" {
		replace, _ := strconv.ParseBool(one("replace"))
		svc := compose.Service{Name: "provider", Mark: compose.Mark{Intercept: &compose.Intercept{
			Name: cmp.Or(one("name"), w), Workload: w, Port: one("port"), Service: one("service"),
			ToPod: opts["to-pod"], Replace: replace,
		}}}
		_, client, err := openDaemon(ctx, d, conn)
		if err != nil {
			return err
		}
		defer client.Close()
		out.send("info", "intercepting "+w)
		info, err := composeIntercept(ctx, quiet, client, svc, ca.timeout)
		if err != nil {
			return err
		}
		if one("env") != "none" {
			// rawsetenv (compose >= 5.2) gives the dependents the pod's names; setenv would prefix
			// them with the service's name.
			typ := "setenv"
			if slices.Contains(out.types, "rawsetenv") {
				typ = "rawsetenv"
			}
			env := info.GetEnvironment()
			for _, k := range slices.Sorted(maps.Keys(env)) {
				out.send(typ, k+"="+env[k])
			}
		}
		out.send("info", fmt.Sprintf("intercepted %s: %s", w, info.GetDestination()))
	}
	ok = true
	return nil
}

func providerParamNames() []string {
	var names []string
	for _, p := range providerParams {
		names = append(names, p.name)
	}
	return names
}

// joinProjectNetworks attaches the daemon to the project's networks (compose made them before it
// runs providers) under the given names, so that the project's other services reach the services
// that use the daemon's network by their names.
func joinProjectNetworks(ctx context.Context, d deps, project, container string, aliases []string) error {
	docker, err := d.docker()
	if err != nil {
		return err
	}
	nets, err := docker.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+project))})
	if err != nil {
		return fmt.Errorf("list the project's networks: %w", err)
	}
	aliases = slices.DeleteFunc(aliases, func(s string) bool { return strings.TrimSpace(s) == "" })
	for _, n := range nets {
		if err := docker.NetworkConnect(ctx, n.ID, container, &network.EndpointSettings{Aliases: aliases}); err != nil {
			return fmt.Errorf("connect %s to network %s: %w", container, n.Name, err)
		}
	}
	return nil
}
