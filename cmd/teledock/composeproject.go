package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/compose"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/envfile"
	"teledock.dev/teledock/internal/mounts"
	"teledock.dev/teledock/internal/version"
)

// minComposeVersion is the oldest docker compose that runs the override: !reset and !override
// tags, and env_file entries with `format: raw`.
var minComposeVersion = [3]int{2, 30, 0}

var (
	errComposeMissing = errors.New("docker compose is not installed")
	errComposeTooOld  = errors.New("docker compose is too old")
	// errComposeDaemonTaken: the project's daemon container name belongs to something else.
	errComposeDaemonTaken = errors.New("the project's daemon name is taken")
)

// composeUpCommands are the docker compose commands that start containers: teledock generates
// (connects and intercepts) before them.
var composeUpCommands = map[string]bool{"up": true, "create": true, "start": true, "restart": true, "run": true}

func runCompose(ctx context.Context, d deps, ca composeArgs) error {
	switch {
	case ca.command == "metadata":
		return providerMetadata(d.stdout)
	case d.getenv(composeProviderEnv) != "" && (ca.command == "up" || ca.command == "down"):
		return runComposeProvider(ctx, d, ca)
	}
	if err := checkComposeVersion(ctx); err != nil {
		return err
	}
	project, err := compose.Load(ctx, ca.load)
	if err != nil {
		return err
	}
	switch {
	case ca.command == "down":
		return composeDown(ctx, d, project, ca)
	case ca.command == "generate" || composeUpCommands[ca.command]:
		plan, err := compose.NewPlan(project)
		if err != nil {
			return err
		}
		res, err := composeGenerate(ctx, d, plan, project, ca)
		if err != nil {
			return err
		}
		if ca.command == "generate" {
			return writeGenerated(d.stdout, plan, res, ca.output)
		}
		// docker compose's own output follows; what teledock did goes to stderr.
		if err := writeGenerated(d.stderr, plan, res, ""); err != nil {
			return err
		}
		return dockerCompose(ctx, d, composeLine(ca, plan.Project, plan.FileFlags("")), ca.command, ca.args)
	default:
		return dockerCompose(ctx, d, composeLine(ca, project.Name, projectFileFlags(project)), ca.command, ca.args)
	}
}

// generated is what composeGenerate did.
type generated struct {
	intercepts map[string]*managerv1.InterceptInfo // by service
	skipped    map[string][]string                 // by service: variables the env file cannot hold
	volumes    bool                                // some service got its pod's volumes
}

// composeGenerate writes the override and what it needs, starts the project's daemon service,
// waits for it to connect and creates the intercepts; their environments go to the env files. On
// failure it takes back what it made.
func composeGenerate(ctx context.Context, d deps, plan *compose.Plan, project *types.Project, ca composeArgs) (_ *generated, err error) {
	kubeconfig := plan.Settings.Kubeconfig
	if kubeconfig != "" && !filepath.IsAbs(kubeconfig) {
		kubeconfig = filepath.Join(plan.WorkingDir, kubeconfig)
	}
	kc, err := launcher.PrepareKubeconfig(launcher.KubeconfigOptions{
		Path: kubeconfig, Context: plan.Settings.Context, Namespace: plan.Settings.Namespace,
	})
	if err != nil {
		return nil, err
	}
	transport := cmp.Or(plan.Settings.Transport, "auto")
	spec := launcher.Spec{
		Name:             plan.Connection,
		Image:            cmp.Or(d.getenv("TELEDOCK_DAEMON_IMAGE"), "teledock/daemon:"+version.Version),
		Kubeconfig:       kc,
		ManagerNamespace: cmp.Or(plan.Settings.ManagerNamespace, "teledock"),
		Hostname:         d.hostname,
		User:             d.username,
		Transport:        transport,
	}
	if v := d.getenv("TELEDOCK_DEBUG"); v != "" {
		spec.Env = map[string]string{"TELEDOCK_DEBUG": v}
	}
	docker, err := d.docker()
	if err != nil {
		return nil, err
	}
	l, err := d.launcher()
	if err != nil {
		return nil, err
	}
	if err := checkDaemonOwner(ctx, docker, plan); err != nil {
		return nil, err
	}
	// What was there before decides what a failure takes back: a project that was not running is
	// brought down again; one that was keeps its containers.
	running, err := docker.ContainerList(ctx, projectFilter(plan.Project))
	if err != nil {
		return nil, fmt.Errorf("list the project's containers: %w", err)
	}
	_, statErr := os.Stat(plan.Dir)
	dirExisted := statErr == nil

	// A token the daemon already has is kept: a new one would change the daemon service's
	// configuration, and compose would recreate it (and every marked service) on each run.
	spec.Token = readToken(plan.DaemonEnv)
	if spec.Token == "" {
		spec.Token = launcher.NewToken()
	}
	override, err := plan.OverrideYAML(project, compose.Daemon{
		Image: spec.Image, Environment: launcher.Environment(spec), Labels: launcher.Labels(spec),
	})
	if err != nil {
		return nil, err
	}
	line := composeLine(ca, plan.Project, plan.FileFlags(""))
	defer func() {
		if err == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if len(running) == 0 {
			// Nothing of the project ran: down removes the daemon and the networks it made, and
			// no container uses the volumes.
			_ = dockerComposeQuiet(rctx, d, line, "down")
			removeVolumes(d, plan.Connection, "")
		} else {
			_ = dockerComposeQuiet(rctx, d, line, "rm", "--stop", "--force", compose.DaemonService)
		}
		if !dirExisted {
			_ = os.RemoveAll(plan.Dir)
			removeIfEmpty(filepath.Dir(plan.Dir))
			_ = d.connections.Remove(plan.Connection)
		}
	}()
	if err := writeComposeFiles(plan, kc, spec.Token, override); err != nil {
		return nil, err
	}
	if err := d.connections.Save(launcher.Connection{Name: plan.Connection, Container: plan.Container, Token: spec.Token}); err != nil {
		return nil, err
	}

	fmt.Fprintf(d.stderr, "Starting the daemon service %q of project %s (%s)\n", compose.DaemonService, plan.Project, spec.Image)
	if err := dockerComposeQuiet(ctx, d, line, "up", "--detach", compose.DaemonService); err != nil {
		return nil, err
	}
	c, err := l.Find(ctx, plan.Connection)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(d.stderr, "Connecting to the traffic-manager in namespace %s\n", spec.ManagerNamespace)
	if _, err := awaitConnected(ctx, d, l, c, transport, 60*time.Second); err != nil {
		if showLog(err) {
			if logs, lerr := l.Logs(context.WithoutCancel(ctx), plan.Connection, 20); lerr == nil && logs != "" {
				fmt.Fprintf(d.stderr, "Last lines of the daemon's log (%s):\n%s", c.Name, indent(logs))
			}
		}
		return nil, err
	}
	client, err := dialDaemon(d, c)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	res := &generated{intercepts: map[string]*managerv1.InterceptInfo{}, skipped: map[string][]string{}}
	defer func() {
		if err != nil {
			for _, info := range res.intercepts {
				leaveQuietly(d, client, info.GetName())
			}
		}
	}()
	for _, s := range plan.Services {
		if s.Intercept == nil {
			continue
		}
		info, err := composeIntercept(ctx, d, client, s, ca.timeout)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		res.intercepts[s.Name] = info
		if s.EnvFile != "" {
			if res.skipped[s.Name], err = compose.WriteEnv(s.EnvFile, info.GetEnvironment()); err != nil {
				return nil, err
			}
		}
	}
	if err := composeVolumes(ctx, d, c, plan, res); err != nil {
		return nil, err
	}
	if res.volumes {
		override, err := plan.OverrideYAML(project, compose.Daemon{
			Image: spec.Image, Environment: launcher.Environment(spec), Labels: launcher.Labels(spec),
		})
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(plan.Override, override, 0o644); err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
	}
	return res, nil
}

// composeVolumes makes the intercepted services' volumes (as `intercept` does, mode auto) and puts
// them in the plan; a service whose volumes cannot be made runs without them, with a notice.
func composeVolumes(ctx context.Context, d deps, c *launcher.Container, plan *compose.Plan, res *generated) error {
	for i := range plan.Services {
		s := &plan.Services[i]
		info := res.intercepts[s.Name]
		if info == nil || s.MountRoot() == "" {
			continue
		}
		rep := mountVolumes(ctx, d, c, info, mountOptions{mount: s.MountRoot(), mode: string(mounts.Auto)})
		switch {
		case rep == nil:
			continue
		case rep.Error != "":
			fmt.Fprintf(d.stderr, "service %s: Volume Mount Error: %s\n", s.Name, rep.Error)
			continue
		case rep.Notice != "":
			fmt.Fprintf(d.stderr, "service %s: %s\n", s.Name, rep.Notice)
		}
		info.MountPoint = rep.Root
		for _, v := range rep.Volumes {
			s.Volumes = append(s.Volumes, compose.Volume{Name: v.Name, Target: path.Join(rep.Root, v.Path), ReadOnly: v.ReadOnly})
		}
		res.volumes = true
	}
	return ctx.Err()
}

// checkDaemonOwner refuses to touch a daemon container of the project's name that is not this
// project's: one that `teledock connect --name compose-P` made, or the daemon of a project of the
// same name in another folder. Compose would fail on the container name, without saying why.
func checkDaemonOwner(ctx context.Context, docker dockerAPI, plan *compose.Plan) error {
	c, err := docker.ContainerInspect(ctx, plan.Container)
	switch {
	case cerrdefs.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("inspect %s: %w", plan.Container, err)
	}
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	dir := labels["com.docker.compose.project.working_dir"]
	switch {
	case labels[compose.LabelProject] == "":
		return fmt.Errorf("%w: container %s is not a compose project's daemon (a `teledock connect --name %s`?); "+
			"remove it with `teledock quit --name %s`, or give this project another name with -p", errComposeDaemonTaken, plan.Container, plan.Connection, plan.Connection)
	case labels[compose.LabelProject] != plan.Project || (dir != "" && dir != plan.WorkingDir):
		return fmt.Errorf("%w: container %s is the daemon of project %s in %s; run `teledock compose down` there, "+
			"or give this project another name with -p", errComposeDaemonTaken, plan.Container, labels[compose.LabelProject], dir)
	}
	return nil
}

// composeIntercept creates a marked service's intercept through the daemon, with the flags'
// checks of `teledock intercept`.
func composeIntercept(ctx context.Context, d deps, client *daemonClient, s compose.Service, timeout time.Duration) (*managerv1.InterceptInfo, error) {
	ic := s.Intercept
	opts := interceptOptions{
		name: ic.Name, port: ic.Port, service: ic.Service, workload: ic.Workload, mechanism: "tcp",
		toPod: ic.ToPod, replace: ic.Replace, connection: "default", timeout: timeout,
	}
	req, err := opts.request()
	if err != nil {
		return nil, err
	}
	if err := checkLocalPort(ctx, client, req); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := notifyWait(d.stderr, 2*time.Second, 5*time.Second, fmt.Sprintf(
		"the traffic-agent of %s (injection and rollout; up to %s)", ic.Workload, timeout))
	info, err := client.CreateIntercept(cctx, req)
	stop()
	if err != nil {
		return nil, interceptError(ic.Name, err)
	}
	return info, nil
}

// writeComposeFiles writes the state folder: the override, the kubeconfig and token the daemon
// service mounts, and an (empty, until the intercepts are made) env file per importing service so
// that the override loads. Everything is the user's only, and the folder ignores itself in git.
func writeComposeFiles(plan *compose.Plan, kc *launcher.Kubeconfig, token string, override []byte) error {
	if err := os.MkdirAll(plan.EnvDir, 0o700); err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	ignore := filepath.Join(filepath.Dir(plan.Dir), ".gitignore")
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{ignore, []byte("# Written by teledock: what is here holds credentials and the pods' environments.\n*\n"), 0o644},
		{plan.Kubeconfig, kc.Data, 0o600},
		{plan.DaemonEnv, []byte("TELEDOCK_TOKEN=" + token + "\n"), 0o600},
		{plan.Override, override, 0o644},
	}
	for _, f := range files {
		if err := writeFileAtomic(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("compose: %w", err)
		}
	}
	for _, s := range plan.Services {
		if s.EnvFile == "" || exists(s.EnvFile) {
			continue
		}
		if _, err := envfile.Write(s.EnvFile, nil); err != nil {
			return fmt.Errorf("compose: %w", err)
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// readToken returns the token of an earlier generate, "" if there is none.
func readToken(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	env, err := envfile.Parse(f, nil)
	if err != nil {
		return ""
	}
	return env["TELEDOCK_TOKEN"]
}

// composeDown runs docker compose down with the override, then removes what generate wrote. The
// daemon's SIGTERM ends its session, and with it the intercepts.
func composeDown(ctx context.Context, d deps, project *types.Project, ca composeArgs) error {
	if err := dockerCompose(ctx, d, composeLine(ca, project.Name, projectFileFlags(project)), "down", ca.args); err != nil {
		return err
	}
	plan, err := compose.NewPlan(project)
	if err != nil {
		return nil // not a teledock project (any more): plain docker compose was all
	}
	// A daemon the override no longer names (the files were removed by hand) is not compose's.
	if l, err := d.launcher(); err == nil {
		if err := l.Remove(ctx, plan.Connection); err != nil {
			return err
		}
	}
	removeVolumes(d, plan.Connection, "")
	if err := os.RemoveAll(plan.Dir); err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	removeIfEmpty(filepath.Dir(plan.Dir))
	if err := d.connections.Remove(plan.Connection); err != nil {
		return err
	}
	return nil
}

// removeIfEmpty removes the state folder when only its .gitignore is left.
func removeIfEmpty(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != ".gitignore" {
			return
		}
	}
	_ = os.RemoveAll(dir)
}

// composeLine is `compose` with the global flags, the project name and the files.
func composeLine(ca composeArgs, project string, files []string) []string {
	line := append([]string{"compose"}, ca.global...)
	line = append(line, "-p", project)
	return append(line, files...)
}

// projectFileFlags are the project's -f flags, with teledock's override when it has one.
func projectFileFlags(project *types.Project) []string {
	if plan, err := compose.NewPlan(project); err == nil && exists(plan.Override) {
		return plan.FileFlags("")
	}
	return compose.FileFlags(project.ComposeFiles)
}

// dockerCompose runs a docker compose command with the terminal's streams; its exit code is
// teledock's. Ctrl-C reaches docker compose through the terminal; a SIGTERM to teledock is passed
// on as an interrupt.
func dockerCompose(ctx context.Context, d deps, line []string, command string, args []string) error {
	argv := append(append(append([]string(nil), line...), command), args...)
	interrupt := func(cmd *exec.Cmd) error { return cmd.Process.Signal(os.Interrupt) }
	return dockerCLI(ctx, d, argv, interrupt)
}

// dockerComposeQuiet runs a docker compose command of teledock's own; its output is shown only
// when it fails.
func dockerComposeQuiet(ctx context.Context, d deps, line []string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", append(append([]string(nil), line...), args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	d.log.Debug("running", "args", cmd.Args)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker %s: %w\n%s", strings.Join(append(line[:1:1], args...), " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// checkComposeVersion refuses a missing or too old docker compose, before anything is made.
func checkComposeVersion(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("%w: the docker CLI is not on PATH", errComposeMissing)
	}
	out, err := exec.CommandContext(ctx, "docker", "compose", "version", "--short").Output()
	if err != nil {
		return fmt.Errorf("%w: `docker compose version` failed: %w", errComposeMissing, err)
	}
	v := strings.TrimSpace(string(out))
	got, ok := parseVersion(v)
	if !ok {
		return fmt.Errorf("%w: cannot read its version %q", errComposeTooOld, v)
	}
	for i := range got {
		if got[i] != minComposeVersion[i] {
			if got[i] < minComposeVersion[i] {
				return fmt.Errorf("%w: %s; teledock needs %d.%d.%d or newer", errComposeTooOld, v,
					minComposeVersion[0], minComposeVersion[1], minComposeVersion[2])
			}
			break
		}
	}
	return nil
}

// parseVersion reads "v2.40.3", "2.36.0-desktop.1" or "5.6.0".
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	s = strings.TrimPrefix(s, "v")
	s, _, _ = strings.Cut(s, "-")
	s, _, _ = strings.Cut(s, "+")
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return v, false
	}
	for i := 0; i < 3 && i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// generatedJSON is what `compose generate -o json` prints.
type generatedJSON struct {
	SchemaVersion int                    `json:"schemaVersion"`
	Project       string                 `json:"project"`
	Connection    string                 `json:"connection"`
	Container     string                 `json:"container"`
	Override      string                 `json:"override"`
	Command       []string               `json:"command"`
	ComposeFile   string                 `json:"compose_file"`
	Services      []generatedServiceJSON `json:"services"`
	Notices       []string               `json:"notices,omitempty"`
}

type generatedServiceJSON struct {
	Name      string         `json:"name"`
	Intercept *interceptJSON `json:"intercept,omitempty"`
	EnvFile   string         `json:"env_file,omitempty"`
	// EnvSkipped names the pod's variables that the env file cannot hold (newlines in values).
	EnvSkipped []string `json:"env_skipped,omitempty"`
}

// writeGenerated says what generate did and how to run the project without teledock.
func writeGenerated(w io.Writer, plan *compose.Plan, res *generated, output string) error {
	cwd, _ := os.Getwd()
	files := plan.Files(cwd)
	command := append([]string{"docker", "compose"}, compose.FileFlags(files)...)
	composeFile := strings.Join(files, string(os.PathListSeparator))
	if output == "json" {
		j := generatedJSON{
			SchemaVersion: schemaVersion, Project: plan.Project, Connection: plan.Connection, Container: plan.Container,
			Override: plan.Override, Command: command, ComposeFile: composeFile, Notices: plan.Notices,
		}
		for _, s := range plan.Services {
			sj := generatedServiceJSON{Name: s.Name, EnvFile: s.EnvFile, EnvSkipped: res.skipped[s.Name]}
			if info := res.intercepts[s.Name]; info != nil {
				ij := newInterceptJSON(info)
				sj.Intercept = &ij
			}
			j.Services = append(j.Services, sj)
		}
		return writeJSON(w, j)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Project %s: daemon service %q (container %s, connection %s)\n", plan.Project, compose.DaemonService, plan.Container, plan.Connection)
	for _, s := range plan.Services {
		info := res.intercepts[s.Name]
		if info == nil {
			fmt.Fprintf(&b, "Service %s reaches the cluster\n", s.Name)
			continue
		}
		fmt.Fprintf(&b, "Service %s: ", s.Name)
		b.WriteString(renderIntercept(info))
		if s.EnvFile != "" {
			fmt.Fprintf(&b, "    %-23s: %s\n", "Environment", compose.RelTo(cwd, s.EnvFile))
			if sk := res.skipped[s.Name]; len(sk) > 0 {
				fmt.Fprintf(&b, "    %-23s: %s (an env file cannot hold them)\n", "Left out", strings.Join(sk, ", "))
			}
		}
	}
	for _, n := range plan.Notices {
		fmt.Fprintf(&b, "Note: %s\n", n)
	}
	fmt.Fprintf(&b, "Run the project with:\n  %s up\nor set COMPOSE_FILE=%s\n", strings.Join(command, " "), composeFile)
	_, err := io.WriteString(w, b.String())
	return err
}

// projectFilter lists a compose project's containers, running or not.
func projectFilter(project string) container.ListOptions {
	return container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+project))}
}
