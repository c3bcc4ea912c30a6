package launcher

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig whose certificates are files next to it, referenced by
// relative paths the way kind and kubeadm write them.
func writeKubeconfig(t testing.TB, servers map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"ca.crt": "CA-PEM", "client.crt": "CERT-PEM", "client.key": "KEY-PEM"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	for name, server := range servers {
		cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: "ca.crt"}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: "user", Namespace: "ns-" + name}
	}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: "client.crt", ClientKey: "client.key"}
	cfg.AuthInfos["exec-user"] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{Command: "gke-gcloud-auth-plugin", APIVersion: "client.authentication.k8s.io/v1"}}
	cfg.Contexts["exec"] = &clientcmdapi.Context{Cluster: "remote", AuthInfo: "exec-user"}
	cfg.Contexts["dangling"] = &clientcmdapi.Context{Cluster: "missing", AuthInfo: "user"}
	cfg.Contexts["no-cluster"] = &clientcmdapi.Context{AuthInfo: "user"}
	cfg.CurrentContext = "local"
	p := filepath.Join(dir, "config")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrepareKubeconfig(t *testing.T) {
	path := writeKubeconfig(t, map[string]string{
		"local":     "https://127.0.0.1:6443",
		"localhost": "https://localhost:6443",
		"ipv6":      "https://[::1]:6443",
		"noport":    "https://localhost",
		"remote":    "https://k8s.example.com:443",
	})
	tests := []struct {
		name          string
		opts          KubeconfigOptions
		wantContext   string
		wantNamespace string
		wantServer    string // as the container sees it
		wantTLSName   string
		wantErr       error
	}{
		{name: "current context, loopback IP", opts: KubeconfigOptions{}, wantContext: "local", wantNamespace: "ns-local",
			wantServer: "https://host.docker.internal:6443", wantTLSName: "127.0.0.1"},
		{name: "localhost", opts: KubeconfigOptions{Context: "localhost"}, wantContext: "localhost", wantNamespace: "ns-localhost",
			wantServer: "https://host.docker.internal:6443", wantTLSName: "localhost"},
		{name: "ipv6 loopback", opts: KubeconfigOptions{Context: "ipv6"}, wantContext: "ipv6", wantNamespace: "ns-ipv6",
			wantServer: "https://host.docker.internal:6443", wantTLSName: "::1"},
		{name: "no port", opts: KubeconfigOptions{Context: "noport"}, wantContext: "noport", wantNamespace: "ns-noport",
			wantServer: "https://host.docker.internal", wantTLSName: "localhost"},
		{name: "remote stays", opts: KubeconfigOptions{Context: "remote", Namespace: "mine"}, wantContext: "remote", wantNamespace: "mine",
			wantServer: "https://k8s.example.com:443"},
		{name: "unknown context", opts: KubeconfigOptions{Context: "nope"}, wantErr: ErrContextNotFound},
		{name: "exec credentials", opts: KubeconfigOptions{Context: "exec"}, wantErr: ErrExecCredentials},
		{name: "context without cluster", opts: KubeconfigOptions{Context: "dangling"}, wantErr: ErrInvalidKubeconfig},
		{name: "context naming no cluster", opts: KubeconfigOptions{Context: "no-cluster"}, wantErr: ErrInvalidKubeconfig},
		{name: "missing file", opts: KubeconfigOptions{Path: filepath.Join(t.TempDir(), "nope")}, wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Path == "" {
				tt.opts.Path = path
			}
			kc, err := PrepareKubeconfig(tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kc.Context != tt.wantContext || kc.Namespace != tt.wantNamespace || kc.ContainerServer != tt.wantServer {
				t.Errorf("got context %q namespace %q server %q", kc.Context, kc.Namespace, kc.ContainerServer)
			}

			// What the container gets: one context, certificates inline, the rewritten server.
			out, err := clientcmd.Load(kc.Data)
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Contexts) != 1 || len(out.Clusters) != 1 || len(out.AuthInfos) != 1 || out.CurrentContext != tt.wantContext {
				t.Fatalf("not minified: %d contexts, %d clusters, %d users, current %q",
					len(out.Contexts), len(out.Clusters), len(out.AuthInfos), out.CurrentContext)
			}
			ctx := out.Contexts[out.CurrentContext]
			if ctx.Namespace != tt.wantNamespace {
				t.Errorf("context namespace = %q", ctx.Namespace)
			}
			cluster, user := out.Clusters[ctx.Cluster], out.AuthInfos[ctx.AuthInfo]
			if cluster.Server != tt.wantServer || cluster.TLSServerName != tt.wantTLSName {
				t.Errorf("cluster server %q tls-server-name %q", cluster.Server, cluster.TLSServerName)
			}
			if cluster.CertificateAuthority != "" || string(cluster.CertificateAuthorityData) != "CA-PEM" {
				t.Errorf("CA not embedded: path %q data %q", cluster.CertificateAuthority, cluster.CertificateAuthorityData)
			}
			if user.ClientCertificate != "" || string(user.ClientCertificateData) != "CERT-PEM" || string(user.ClientKeyData) != "KEY-PEM" {
				t.Errorf("client credentials not embedded: %+v", user)
			}
			if kc.Server == "" || (kc.Server != kc.ContainerServer) == (tt.wantTLSName == "") {
				t.Errorf("Server %q vs ContainerServer %q", kc.Server, kc.ContainerServer)
			}
		})
	}
}

func TestReachFromContainerKeepsExplicitTLSName(t *testing.T) {
	tests := []struct {
		name    string
		cluster clientcmdapi.Cluster
		want    clientcmdapi.Cluster
	}{
		{
			name:    "explicit tls-server-name kept",
			cluster: clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", TLSServerName: "kubernetes"},
			want:    clientcmdapi.Cluster{Server: "https://host.docker.internal:6443", TLSServerName: "kubernetes"},
		},
		{
			name:    "insecure needs no name",
			cluster: clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", InsecureSkipTLSVerify: true},
			want:    clientcmdapi.Cluster{Server: "https://host.docker.internal:6443", InsecureSkipTLSVerify: true},
		},
		{
			name:    "plain http",
			cluster: clientcmdapi.Cluster{Server: "http://localhost:8080"},
			want:    clientcmdapi.Cluster{Server: "http://host.docker.internal:8080"},
		},
		{
			name:    "subdomain of localhost",
			cluster: clientcmdapi.Cluster{Server: "https://api.localhost:6443"},
			want:    clientcmdapi.Cluster{Server: "https://host.docker.internal:6443", TLSServerName: "api.localhost"},
		},
		{
			name:    "127.x",
			cluster: clientcmdapi.Cluster{Server: "https://127.1.2.3:6443"},
			want:    clientcmdapi.Cluster{Server: "https://host.docker.internal:6443", TLSServerName: "127.1.2.3"},
		},
		{
			name:    "host address unchanged",
			cluster: clientcmdapi.Cluster{Server: "https://192.168.1.10:6443"},
			want:    clientcmdapi.Cluster{Server: "https://192.168.1.10:6443"},
		},
		{
			name:    "name containing localhost unchanged",
			cluster: clientcmdapi.Cluster{Server: "https://localhost.example.com:6443"},
			want:    clientcmdapi.Cluster{Server: "https://localhost.example.com:6443"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cluster
			if err := reachFromContainer(&c); err != nil {
				t.Fatal(err)
			}
			if c.Server != tt.want.Server || c.TLSServerName != tt.want.TLSServerName || c.InsecureSkipTLSVerify != tt.want.InsecureSkipTLSVerify {
				t.Errorf("got %q %q, want %q %q", c.Server, c.TLSServerName, tt.want.Server, tt.want.TLSServerName)
			}
		})
	}
}

func TestPrepareNoContext(t *testing.T) {
	cfg := clientcmdapi.NewConfig()
	if _, err := prepare(cfg, KubeconfigOptions{}); !errors.Is(err, ErrNoContext) {
		t.Errorf("err = %v, want ErrNoContext", err)
	}
}

func TestContexts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	kc := `apiVersion: v1
kind: Config
current-context: b
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: b
  context: {cluster: c1, user: u, namespace: apps}
- name: a
  context: {cluster: missing, user: u}
users:
- name: u
  user: {token: x}
`
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Contexts(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []ContextInfo{{Name: "a", Cluster: "missing"}, {Name: "b", Cluster: "c1", Server: "https://127.0.0.1:6443", Namespace: "apps", Current: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Contexts = %+v, want %+v", got, want)
	}
	if _, err := Contexts(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrInvalidKubeconfig) {
		t.Errorf("missing file: %v", err)
	}
}
