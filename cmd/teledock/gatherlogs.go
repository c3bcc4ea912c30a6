package main

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/version"
)

type gatherLogsOptions struct {
	connection       string
	file             string
	kubeconfig       string
	context          string
	namespace        string
	managerNamespace string
}

func newGatherLogsCmd(d deps) *cobra.Command {
	var opts gatherLogsOptions
	cmd := &cobra.Command{
		Use:   "gather-logs",
		Short: "Collect what a bug report needs into a zip: logs of the daemon, the traffic-manager and the agents, status, versions",
		Long: "Collect into one zip file: the daemon container's log, `status -o json`, the traffic-manager's\n" +
			"logs, the traffic-agents' logs of the connection's namespace, and the versions of every part.\n" +
			"The environment values the connection's intercepts imported (Secret values among them) and\n" +
			"bearer tokens are replaced by <redacted> in every file. What cannot be collected is listed in\n" +
			"errors.txt; the command fails only when the zip cannot be written.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGatherLogs(cmd.Context(), d, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.connection, "name", "default", "connection name")
	f.StringVarP(&opts.file, "output-file", "o", "", "the zip file to write (default: teledock-logs-DATE.zip)")
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&opts.context, "context", "", "kubeconfig context (default: the connection's, else the current one)")
	f.StringVarP(&opts.namespace, "namespace", "n", "", "namespace of the agents (default: the connection's)")
	f.StringVar(&opts.managerNamespace, "manager-namespace", "", "namespace of the traffic-manager (default: the connection's, else teledock)")
	return cmd
}

// bundle is the zip's contents, file by file, with what could not be collected.
type bundle struct {
	files    map[string][]byte
	versions []string
	problems []string
}

func (b *bundle) add(name string, data []byte) { b.files[name] = data }

func (b *bundle) fail(what string, err error) {
	b.problems = append(b.problems, fmt.Sprintf("%s: %v", what, err))
}

func runGatherLogs(ctx context.Context, d deps, opts gatherLogsOptions) error {
	if err := launcher.ValidateName(opts.connection); err != nil {
		return err
	}
	if opts.file == "" {
		opts.file = "teledock-logs-" + time.Now().Format("20060102-150405") + ".zip"
	}
	b := &bundle{files: map[string][]byte{}}
	b.versions = append(b.versions, "teledock CLI "+version.Version)
	secrets := gatherDaemon(ctx, d, &opts, b)
	if opts.managerNamespace == "" {
		opts.managerNamespace = "teledock"
	}
	gatherCluster(ctx, opts, b)
	b.add("versions.txt", []byte(strings.Join(b.versions, "\n")+"\n"))
	if len(b.problems) > 0 {
		b.add("errors.txt", []byte(strings.Join(b.problems, "\n")+"\n"))
	}
	r := newRedactor(secrets)
	if err := writeZip(opts.file, b.files, r); err != nil {
		return fmt.Errorf("gather-logs: %w", err)
	}
	fmt.Fprintf(d.stdout, "Wrote %s (%d files", opts.file, len(b.files))
	if len(b.problems) > 0 {
		fmt.Fprintf(d.stdout, "; %d parts could not be collected, see errors.txt", len(b.problems))
	}
	fmt.Fprintln(d.stdout, ")")
	return nil
}

// gatherDaemon adds the connection's status and daemon log, fills in the namespaces and context
// the connection uses where the flags left them open, and returns the values to redact.
func gatherDaemon(ctx context.Context, d deps, opts *gatherLogsOptions, b *bundle) (secrets []string) {
	if conn, err := d.connections.Load(opts.connection); err == nil {
		secrets = append(secrets, conn.Token)
	}
	info, err := collectStatus(ctx, d, opts.connection)
	if err != nil {
		b.fail("status", err)
		return secrets
	}
	if data, err := json.MarshalIndent(info, "", "  "); err == nil {
		b.add("status.json", append(data, '\n'))
	}
	l, err := d.launcher()
	if err != nil {
		b.fail("daemon", err)
		return secrets
	}
	c, err := l.Find(ctx, opts.connection)
	if err != nil {
		b.fail("daemon container", err)
		return secrets
	}
	if log, err := l.Logs(ctx, opts.connection, 100000); err != nil {
		b.fail("daemon log", err)
	} else {
		b.add("daemon.log", []byte(log))
	}
	b.versions = append(b.versions, "daemon image "+c.Image)
	opts.context = orElse(opts.context, c.Context)
	opts.namespace = orElse(opts.namespace, c.Namespace)
	opts.managerNamespace = orElse(opts.managerNamespace, c.ManagerNamespace)
	if c.Running {
		secrets = append(secrets, interceptEnvValues(ctx, d, c)...)
	}
	return secrets
}

// orElse is a, or b when a is empty.
func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// interceptEnvValues are the values of every environment the connection's intercepts imported.
func interceptEnvValues(ctx context.Context, d deps, c *launcher.Container) []string {
	client, err := dialDaemon(d, c)
	if err != nil {
		return nil
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := client.ListIntercepts(ctx, &daemonv1.ListInterceptsRequest{})
	if err != nil {
		return nil
	}
	var values []string
	for _, ic := range list.GetIntercepts() {
		for _, v := range ic.GetEnvironment() {
			values = append(values, v)
		}
	}
	return values
}

// gatherCluster adds the traffic-manager's logs and the agents' logs of the namespace.
func gatherCluster(ctx context.Context, opts gatherLogsOptions, b *bundle) {
	rc, err := userRESTConfig(opts.kubeconfig, opts.context)
	if err != nil {
		b.fail("kubeconfig", err)
		return
	}
	k8s, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.fail("kubeconfig", err)
		return
	}
	pods, err := k8s.CoreV1().Pods(opts.managerNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.fail("traffic-manager pods in "+opts.managerNamespace, err)
	}
	for _, p := range podsOrNone(pods) {
		for _, c := range p.Spec.Containers {
			b.versions = append(b.versions, fmt.Sprintf("%s/%s %s: %s", opts.managerNamespace, p.Name, c.Name, c.Image))
			podLog(ctx, k8s, p, c.Name, "manager/"+p.Name+"."+c.Name+".log", b)
		}
	}
	if opts.namespace != "" {
		pods, err := k8s.CoreV1().Pods(opts.namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			b.fail("pods in "+opts.namespace, err)
		}
		for _, p := range podsOrNone(pods) {
			if slices.ContainsFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == inject.AgentContainerName }) {
				for _, c := range p.Spec.Containers {
					if c.Name == inject.AgentContainerName {
						b.versions = append(b.versions, fmt.Sprintf("%s/%s %s: %s", opts.namespace, p.Name, c.Name, c.Image))
					}
				}
				podLog(ctx, k8s, p, inject.AgentContainerName, "agents/"+opts.namespace+"/"+p.Name+".log", b)
			}
		}
	}
}

func podsOrNone(l *corev1.PodList) []corev1.Pod {
	if l == nil {
		return nil
	}
	return l.Items
}

// maxPodLog bounds each container's log in the bundle.
const maxPodLog = 16 << 20

func podLog(ctx context.Context, k8s kubernetes.Interface, p corev1.Pod, container, file string, b *bundle) {
	limit := int64(maxPodLog)
	rc, err := k8s.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, LimitBytes: &limit}).Stream(ctx)
	if err != nil {
		b.fail("log of "+p.Namespace+"/"+p.Name+" "+container, err)
		return
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		b.fail("log of "+p.Namespace+"/"+p.Name+" "+container, err)
	}
	b.add(file, data)
}

// redactor replaces secret values and bearer tokens.
type redactor struct {
	values  *strings.Replacer
	bearers *regexp.Regexp
}

// minSecret is the shortest value redacted: shorter ones ("1", "true") would blank out the logs
// without protecting anything.
const minSecret = 4

func newRedactor(secrets []string) redactor {
	var pairs []string
	// Longest first, so that a value containing another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range slices.Compact(secrets) {
		if len(s) >= minSecret {
			pairs = append(pairs, s, "<redacted>")
		}
	}
	return redactor{
		values:  strings.NewReplacer(pairs...),
		bearers: regexp.MustCompile(`(?i)(bearer\s+|token"?\s*[=:]\s*"?)[A-Za-z0-9._~+/=-]{8,}`),
	}
}

func (r redactor) redact(data []byte) []byte {
	s := r.values.Replace(string(data))
	return []byte(r.bearers.ReplaceAllString(s, "${1}<redacted>"))
}

func writeZip(path string, files map[string][]byte, r redactor) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	z := zip.NewWriter(f)
	for _, n := range slices.Sorted(maps.Keys(files)) {
		w, err := z.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, Modified: time.Now()})
		if err != nil {
			return err
		}
		if _, err := w.Write(r.redact(files[n])); err != nil {
			return err
		}
	}
	return z.Close()
}
