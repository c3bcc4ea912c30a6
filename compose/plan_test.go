package compose

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var testDaemon = Daemon{
	Image:       "teledock/daemon:v0.0.0-test",
	Environment: []string{"TELEDOCK_NAMESPACE=emojivoto", "TELEDOCK_NAME=compose-basic"},
	Labels:      map[string]string{"teledock.dev/name": "compose-basic"},
}

// load loads a testdata project as docker compose would from inside its folder.
func load(t *testing.T, dir string, o LoadOptions) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("testdata", dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(abs)
	o.Env = append([]string{"PWD=" + abs}, o.Env...)
	p, err := Load(context.Background(), o)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

// golden compares the override with testdata/NAME.golden.yaml, the project's folder written as $PROJECT.
func golden(t *testing.T, name string, plan *Plan, got []byte) {
	t.Helper()
	got = bytes.ReplaceAll(got, []byte(plan.WorkingDir), []byte("$PROJECT"))
	path := filepath.Join(plan.WorkingDir, "..", name+".golden.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("override differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

// merged loads the project again with the override, as `docker compose -f ... -f override` does.
func merged(t *testing.T, plan *Plan, override []byte) *types.Project {
	t.Helper()
	if err := os.MkdirAll(plan.EnvDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(plan.WorkingDir, StateDir)) })
	if err := os.WriteFile(plan.Override, override, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{plan.DaemonEnv, plan.Kubeconfig} {
		if err := os.WriteFile(f, []byte("TELEDOCK_TOKEN=x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range plan.Services {
		if s.EnvFile != "" {
			if _, err := WriteEnv(s.EnvFile, map[string]string{"A": "from-pod", "POD_ONLY": "yes"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts, err := cli.NewProjectOptions(append(plan.ComposeFiles, plan.Override),
		cli.WithWorkingDirectory(plan.WorkingDir), cli.WithEnv([]string{"PWD=" + plan.WorkingDir}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading the project with the override: %v\n%s", err, override)
	}
	return p
}

func TestBasicOverride(t *testing.T) {
	p := load(t, "basic", LoadOptions{})
	plan, err := NewPlan(p)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Settings.Context != "dev" || plan.Settings.Namespace != "emojivoto" {
		t.Errorf("settings = %+v", plan.Settings)
	}
	if len(plan.Services) != 2 || plan.Services[0].Name != "web" || plan.Services[1].Name != "worker" {
		t.Fatalf("marked services = %+v", plan.Services)
	}
	ic := plan.Services[0].Intercept
	if ic == nil || ic.Workload != "web-app" || ic.Name != "web-app" || ic.Port != "80:http" || !plan.Services[0].ImportEnv {
		t.Errorf("web's intercept = %+v", ic)
	}
	out, err := plan.OverrideYAML(p, testDaemon)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "basic", plan, out)

	m := merged(t, plan, out)
	web := m.Services["web"]
	if web.NetworkMode != "service:teledock" || len(web.Ports) != 0 || len(web.Expose) != 0 || len(web.DNS) != 0 ||
		web.Hostname != "" || len(web.Networks) != 0 {
		t.Errorf("web after the override: network_mode %q ports %v expose %v dns %v hostname %q networks %v",
			web.NetworkMode, web.Ports, web.Expose, web.DNS, web.Hostname, web.Networks)
	}
	// The service's own env_file wins over the pod's, and its environment over both.
	if got := deref(web.Environment["A"]); got != "1" {
		t.Errorf("A = %q, want the service's env_file value 1", got)
	}
	if got := deref(web.Environment["POD_ONLY"]); got != "yes" {
		t.Errorf("POD_ONLY = %q, want the pod's value", got)
	}
	if got := deref(web.Environment["MODE"]); got != "local" {
		t.Errorf("MODE = %q", got)
	}
	d := m.Services[DaemonService]
	if len(d.Ports) != 2 || d.Ports[1].Published != "8080" || d.Ports[1].Target != 80 {
		t.Errorf("daemon ports = %+v, want the API port and web's 8080:80", d.Ports)
	}
	// The daemon's API (token-guarded) is for the user's CLI: published on the host's loopback only.
	if api := d.Ports[0]; api.HostIP != "127.0.0.1" || api.Target != launcher.APIPort || api.Published != "" {
		t.Errorf("daemon API port = %+v, want 127.0.0.1 and a free port", api)
	}
	if got := d.Networks["default"]; got == nil || strings.Join(got.Aliases, ",") != "frontend,web,worker" {
		t.Errorf("daemon on default = %+v", got)
	}
	if got := d.Networks["back"]; got == nil || strings.Join(got.Aliases, ",") != "web" {
		t.Errorf("daemon on back = %+v", got)
	}
	if _, ok := m.Services["redis"].Networks["back"]; !ok || m.Services["redis"].NetworkMode != "" {
		t.Errorf("redis changed: %+v", m.Services["redis"])
	}
	if d.ContainerName != "teledock-daemon-compose-basic" || len(d.CapAdd) != 1 || d.CapAdd[0] != "NET_ADMIN" || d.Privileged {
		t.Errorf("daemon: name %q caps %v privileged %v", d.ContainerName, d.CapAdd, d.Privileged)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestInvalidMarkNamesFileServiceAndKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(`services:
  web:
    image: x
    x-teledock: {intercept: web, port: "http"}
  api:
    image: y
    x-teledock: {intercept: api, colour: blue}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(context.Background(), LoadOptions{ProjectDir: dir, ConfigPaths: []string{filepath.Join(dir, "compose.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewPlan(p)
	var fe *FieldError
	if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want a FieldError", err)
	}
	want := filepath.Join(dir, "compose.yaml") + ": services.api.x-teledock.colour: invalid value: unknown key"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start with %q", err, want)
	}
}

func TestHardInputs(t *testing.T) {
	p := load(t, "hard", LoadOptions{})
	if len(p.ComposeFiles) != 2 || filepath.Base(p.ComposeFiles[1]) != "compose.override.yaml" {
		t.Fatalf("compose files = %v, want compose.yaml and the automatic compose.override.yaml", p.ComposeFiles)
	}
	plan, err := NewPlan(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range plan.Services {
		names = append(names, s.Name)
	}
	// debug is in an inactive profile; queue comes from the included file; api from the override.
	if strings.Join(names, ",") != "api,queue,web" {
		t.Fatalf("marked services = %v", names)
	}
	if plan.Services[0].ImportEnv || plan.Services[0].EnvFile != "" {
		t.Errorf("api has env: none, but imports: %+v", plan.Services[0])
	}
	web := plan.Services[2]
	if web.Intercept.Port != "443" || strings.Join(web.Intercept.ToPod, ",") != "5432,53/UDP" {
		t.Errorf("web's intercept = %+v", web.Intercept)
	}
	out, err := plan.OverrideYAML(p, testDaemon)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "hard", plan, out)

	// Any -f turns off the automatic override: the printed flags carry it.
	if flags := strings.Join(plan.FileFlags(plan.WorkingDir), " "); flags != "-f compose.yaml -f compose.override.yaml -f .teledock/hard/compose.teledock.yaml" {
		t.Errorf("file flags = %s", flags)
	}
	m := merged(t, plan, out)
	w := m.Services["web"]
	if len(w.Ports) != 0 || len(w.DNSSearch) != 0 || len(w.Links) != 0 || w.NetworkMode != "service:teledock" {
		t.Errorf("web after the override: %+v", w)
	}
	// The extended env_file (a.env) and web's own keep their order after the pod's.
	if got := deref(w.Environment["A"]) + deref(w.Environment["B"]); got != "12" {
		t.Errorf("A+B = %q", got)
	}
	a := m.Services["api"]
	if a.MacAddress != "" || len(a.ExtraHosts) != 0 || a.NetworkMode != "service:teledock" {
		t.Errorf("api after the override: mac %q hosts %v", a.MacAddress, a.ExtraHosts)
	}
	if _, ok := m.Services["debug"]; ok {
		t.Errorf("the inactive profile's service is active")
	}
	d := m.Services[DaemonService]
	if d.Ports[1].Published != "8443" || d.Networks["jobs"] == nil || d.Networks["default"] == nil {
		t.Errorf("daemon: ports %+v networks %v", d.Ports, d.Networks)
	}
}

func TestTelepresenceFile(t *testing.T) {
	p := load(t, "tele", LoadOptions{})
	plan, err := NewPlan(p)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Settings.Namespace != "shop" {
		t.Errorf("namespace = %q", plan.Settings.Namespace)
	}
	if len(plan.Services) != 3 {
		t.Fatalf("services = %+v", plan.Services)
	}
	api, legacy, tools := plan.Services[0], plan.Services[1], plan.Services[2]
	if ic := api.Intercept; ic == nil || ic.Name != "api" || ic.Workload != "api-deploy" || ic.Service != "api" ||
		ic.Port != "8080:http" || strings.Join(ic.ToPod, ",") != "6379" || !api.ImportEnv {
		t.Errorf("api = %+v %+v", api, api.Intercept)
	}
	if ic := legacy.Intercept; ic == nil || !ic.Replace || ic.Workload != "legacy" {
		t.Errorf("legacy = %+v", legacy.Intercept)
	}
	if tools.Intercept != nil {
		t.Errorf("tools intercepts: %+v", tools.Intercept)
	}
	out, err := plan.OverrideYAML(p, testDaemon)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "tele", plan, out)
	merged(t, plan, out)
}

func TestPlanErrors(t *testing.T) {
	cases := []struct{ name, file, want string }{
		{"network_mode host", "services:\n  web:\n    image: x\n    network_mode: host\n    x-teledock: {intercept: web}\n", `service web has network_mode "host"`},
		{"port clash", "services:\n  a:\n    image: x\n    ports: ['80']\n    x-teledock: {connect: true}\n  b:\n    image: x\n    x-teledock: {intercept: b, port: '80'}\n", "services a and b both use port 80/tcp"},
		{"intercept name clash", "services:\n  a:\n    image: x\n    x-teledock: {intercept: w}\n  b:\n    image: x\n    x-teledock: {intercept: w}\n", "services a and b both make an intercept named w"},
		{"service named teledock", "services:\n  teledock:\n    image: x\n  a:\n    image: x\n    x-teledock: {connect: true}\n", `a service named "teledock"`},
		{"nothing marked", "services:\n  a:\n    image: x\n", "no service is marked"},
		{"env import without intercept", "services:\n  a:\n    image: x\n    x-teledock: {env: import}\n", "services.a.x-teledock.env"},
		{"x-tele wiretap", "services:\n  a:\n    image: x\n    x-tele: {type: wiretap, name: a}\n", `services.a.x-tele.type: invalid value: "wiretap" is not supported`},
		{"x-tele two ports", "services:\n  a:\n    image: x\n    x-tele: {type: intercept, ports: ['1:a', '2:b']}\n", "services.a.x-tele.ports"},
		{"bad top level", "x-teledock: {transport: fast}\nservices:\n  a:\n    image: x\n    x-teledock: {connect: true}\n", `x-teledock.transport: invalid value: "fast"`},
		{"bad local port", "services:\n  a:\n    image: x\n    x-teledock: {intercept: a, port: 'http:80'}\n", "services.a.x-teledock.port"},
		{"relative mount folder", "services:\n  a:\n    image: x\n    x-teledock: {intercept: a, mount: pod}\n", `x-teledock.mount "pod": use true, false or an absolute folder`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			f := filepath.Join(dir, "compose.yaml")
			if err := os.WriteFile(f, []byte(c.file), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Load(context.Background(), LoadOptions{ProjectDir: dir, ConfigPaths: []string{f}, ProjectName: "p"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewPlan(p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// The intercept's volumes, once made, are mounted into the marked service as external volumes,
// with the env that says where they are; the service's own environment stays.
func TestOverrideWithVolumes(t *testing.T) {
	p := load(t, "basic", LoadOptions{})
	plan, err := NewPlan(p)
	if err != nil {
		t.Fatal(err)
	}
	if r := plan.Services[0].MountRoot(); r != "/" {
		t.Errorf("web's mount root = %q, want /", r)
	}
	if r := plan.Services[1].MountRoot(); r != "" {
		t.Errorf("worker (connect only) mount root = %q, want none", r)
	}
	plan.Services[0].Volumes = []Volume{
		{Name: "teledock-compose-basic-web-app-0", Target: "/etc/config", ReadOnly: true},
		{Name: "teledock-compose-basic-web-app-1", Target: "/cache"},
	}
	out, err := plan.OverrideYAML(p, testDaemon)
	if err != nil {
		t.Fatal(err)
	}
	m := merged(t, plan, out)
	web := m.Services["web"]
	got := map[string]types.ServiceVolumeConfig{}
	for _, v := range web.Volumes {
		got[v.Target] = v
	}
	if v := got["/etc/config"]; v.Source != "teledock-compose-basic-web-app-0" || v.Type != types.VolumeTypeVolume || !v.ReadOnly {
		t.Errorf("/etc/config: %+v", v)
	}
	if v := got["/cache"]; v.Source != "teledock-compose-basic-web-app-1" || v.ReadOnly {
		t.Errorf("/cache: %+v", v)
	}
	if vc := m.Volumes["teledock-compose-basic-web-app-0"]; !bool(vc.External) || vc.Name != "teledock-compose-basic-web-app-0" {
		t.Errorf("top-level volume: %+v", vc)
	}
	env := web.Environment
	if v := env["TELEDOCK_MOUNTS"]; v == nil || *v != "/etc/config:/cache" {
		t.Errorf("TELEDOCK_MOUNTS = %v", v)
	}
	if v := env["MODE"]; v == nil || *v != "local" {
		t.Errorf("the service's own MODE = %v", v)
	}
	if len(m.Services["worker"].Volumes) != 0 {
		t.Errorf("worker got volumes: %+v", m.Services["worker"].Volumes)
	}
}
