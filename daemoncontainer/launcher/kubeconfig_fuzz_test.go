package launcher

import (
	"errors"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"k8s.io/client-go/tools/clientcmd"
)

const kindKubeconfig = `apiVersion: v1
kind: Config
current-context: kind-dev
clusters:
- name: kind-dev
  cluster:
    server: https://127.0.0.1:43215
    certificate-authority-data: Q0EtUEVN
contexts:
- name: kind-dev
  context: {cluster: kind-dev, user: kind-dev}
users:
- name: kind-dev
  user:
    client-certificate-data: Q0VSVC1QRU0=
    client-key-data: S0VZLVBFTQ==
`

const execKubeconfig = `apiVersion: v1
kind: Config
current-context: gke
clusters:
- name: gke
  cluster: {server: "https://34.1.2.3", certificate-authority-data: Q0EtUEVN}
contexts:
- name: gke
  context: {cluster: gke, user: gke, namespace: apps}
users:
- name: gke
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      interactiveMode: IfAvailable
`

const noClusterKubeconfig = `apiVersion: v1
kind: Config
current-context: bare
contexts:
- name: bare
  context: {user: u}
users:
- name: u
  user: {token: x}
`

const namedTLSKubeconfig = `apiVersion: v1
kind: Config
current-context: a
clusters:
- name: a
  cluster: {server: "https://[::1]:6443/prefix", tls-server-name: kubernetes}
- name: b
  cluster: {server: "http://LocalHost.:8080", insecure-skip-tls-verify: true}
contexts:
- name: a
  context: {cluster: a, user: u}
- name: b
  context: {cluster: b, user: u, namespace: web}
users:
- name: u
  user: {token: x}
`

// FuzzPrepareKubeconfig: any kubeconfig file, with any --context and --namespace, is refused with
// one of the errors PrepareKubeconfig documents, or becomes a kubeconfig that clientcmd loads back
// with the one context asked for (else the current one), the namespace asked for (else the
// context's, else "default"), no plugin credentials, no file references, and the same API server,
// except that a loopback host becomes the host gateway with the original name kept for TLS. The
// output prepared again stays the same.
func FuzzPrepareKubeconfig(f *testing.F) {
	local, err := os.ReadFile(writeKubeconfig(f, map[string]string{"local": "https://127.0.0.1:6443", "remote": "https://k8s.example.com:443"}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(local, "", "")
	f.Add(local, "remote", "mine")
	f.Add(local, "exec", "")
	f.Add(local, "dangling", "")
	f.Add([]byte(kindKubeconfig), "", "")
	f.Add([]byte(execKubeconfig), "", "")
	f.Add([]byte(noClusterKubeconfig), "", "")
	f.Add([]byte(namedTLSKubeconfig), "", "")
	f.Add([]byte(namedTLSKubeconfig), "b", "")
	f.Add([]byte(""), "", "")
	f.Add([]byte("{"), "", "")
	f.Fuzz(func(t *testing.T, data []byte, context, namespace string) {
		dir := t.TempDir()
		// The files a kubeconfig may name by relative path, as writeKubeconfig's does.
		for name, content := range map[string]string{"config": string(data), "ca.crt": "CA-PEM", "client.crt": "CERT-PEM", "client.key": "KEY-PEM"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path := filepath.Join(dir, "config")
		kc, err := PrepareKubeconfig(KubeconfigOptions{Path: path, Context: context, Namespace: namespace})
		if err != nil {
			if !errors.Is(err, ErrNoContext) && !errors.Is(err, ErrContextNotFound) && !errors.Is(err, ErrInvalidKubeconfig) && !errors.Is(err, ErrExecCredentials) {
				t.Fatalf("error outside the documented ones: %v", err)
			}
			return
		}
		if !utf8.ValidString(namespace) {
			// Not a namespace anyone has (the API server refuses it) and not one YAML can carry:
			// the written kubeconfig has U+FFFD in its place.
			return
		}
		in, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatalf("accepted a kubeconfig clientcmd does not load: %v", err)
		}
		wantContext := context
		if wantContext == "" {
			wantContext = in.CurrentContext
		}
		inCtx := in.Contexts[wantContext]
		if kc.Context != wantContext || inCtx == nil {
			t.Fatalf("context %q, want %q", kc.Context, wantContext)
		}
		wantNS := namespace
		if wantNS == "" {
			wantNS = inCtx.Namespace
		}
		if wantNS == "" {
			wantNS = "default"
		}
		inCluster := in.Clusters[inCtx.Cluster]
		if inCluster == nil {
			t.Fatalf("accepted context %q without a cluster", wantContext)
		}
		if kc.Namespace != wantNS || kc.Server != inCluster.Server {
			t.Fatalf("namespace %q server %q, want %q %q", kc.Namespace, kc.Server, wantNS, inCluster.Server)
		}

		out, err := clientcmd.Load(kc.Data)
		if err != nil {
			t.Fatalf("output does not load: %v\n%s", err, kc.Data)
		}
		ctx := out.Contexts[out.CurrentContext]
		if len(out.Contexts) != 1 || out.CurrentContext != kc.Context || ctx == nil || ctx.Namespace != kc.Namespace {
			t.Fatalf("output contexts %v current %q, want only %q in namespace %q", out.Contexts, out.CurrentContext, kc.Context, kc.Namespace)
		}
		cluster := out.Clusters[ctx.Cluster]
		if cluster == nil || cluster.Server != kc.ContainerServer {
			t.Fatalf("output cluster %+v, want server %q", cluster, kc.ContainerServer)
		}
		if user := out.AuthInfos[ctx.AuthInfo]; user != nil && (user.Exec != nil || user.AuthProvider != nil ||
			user.ClientCertificate != "" || user.ClientKey != "") {
			t.Fatalf("output user keeps plugins or file paths: %+v", user)
		}
		if cluster.CertificateAuthority != "" {
			t.Fatalf("output cluster keeps the CA path %q", cluster.CertificateAuthority)
		}
		checkServer(t, inCluster.Server, inCluster.TLSServerName, inCluster.InsecureSkipTLSVerify, cluster.Server, cluster.TLSServerName)

		// Prepared again (as the output of a rewritten kubeconfig would be), nothing changes.
		again, err := prepare(out, KubeconfigOptions{})
		if err != nil {
			t.Fatalf("output refused when prepared again: %v\n%s", err, kc.Data)
		}
		if again.Context != kc.Context || again.Namespace != kc.Namespace || again.ContainerServer != kc.ContainerServer {
			t.Fatalf("prepared again: %q %q %q, was %q %q %q", again.Context, again.Namespace, again.ContainerServer,
				kc.Context, kc.Namespace, kc.ContainerServer)
		}
	})
}

// checkServer: the container's server is the user's, except that a loopback host (which inside
// the container is the container) is the host gateway, and TLS then verifies the original name.
func checkServer(t *testing.T, server, tlsName string, insecure bool, gotServer, gotTLSName string) {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("accepted server %q: %v", server, err)
	}
	got, err := url.Parse(gotServer)
	if err != nil {
		t.Fatalf("container server %q: %v", gotServer, err)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	addr, aerr := netip.ParseAddr(host)
	loopback := host == "localhost" || strings.HasSuffix(host, ".localhost") || (aerr == nil && addr.Unmap().IsLoopback())
	if !loopback {
		if gotServer != server || gotTLSName != tlsName {
			t.Fatalf("server %q (TLS name %q) became %q (%q)", server, tlsName, gotServer, gotTLSName)
		}
		return
	}
	if got.Hostname() != HostGateway || got.Port() != u.Port() || got.Scheme != u.Scheme || got.Path != u.Path ||
		got.RawQuery != u.RawQuery || got.User.String() != u.User.String() {
		t.Fatalf("loopback server %q became %q", server, gotServer)
	}
	wantTLS := tlsName
	if wantTLS == "" && !insecure && u.Scheme == "https" {
		wantTLS = u.Hostname()
	}
	if gotTLSName != wantTLS {
		t.Fatalf("server %q: TLS name %q, want %q", server, gotTLSName, wantTLS)
	}
}
