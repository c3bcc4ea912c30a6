package install

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestListNodes(t *testing.T) {
	k8s := fake.NewClientset(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "kind-control-plane"},
		Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: "containerd://2.1.1", Architecture: "arm64"}},
	})
	got := listNodes(context.Background(), k8s, slog.New(slog.DiscardHandler))
	if want := []Node{{Name: "kind-control-plane", Runtime: "containerd://2.1.1", Arch: "arm64"}}; !slices.Equal(got, want) {
		t.Errorf("listNodes = %+v, want %+v", got, want)
	}

	// A user who may not list nodes: no nodes, no error.
	k8s.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, os.ErrPermission
	})
	if got := listNodes(context.Background(), k8s, slog.New(slog.DiscardHandler)); got != nil {
		t.Errorf("listNodes when forbidden = %+v, want nil", got)
	}
}

func TestDescribeContextAndServer(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "config")
	data := `apiVersion: v1
kind: Config
current-context: kind-dev
clusters:
- name: kind-dev
  cluster: {server: "https://127.0.0.1:1"}
- name: other
  cluster: {server: "https://127.0.0.1:2"}
contexts:
- name: kind-dev
  context: {cluster: kind-dev, user: u}
- name: other
  context: {cluster: other, user: u}
users:
- name: u
  user: {token: t}
`
	if err := os.WriteFile(kubeconfig, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ context, wantContext, wantServer string }{
		{"", "kind-dev", "https://127.0.0.1:1"},
		{"other", "other", "https://127.0.0.1:2"},
	} {
		// Port 1 and 2 refuse connections: the node list fails fast and stays empty.
		got, err := Describe(context.Background(), Config{Kubeconfig: kubeconfig, Context: tt.context, Namespace: "teledock"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Context != tt.wantContext || got.Server != tt.wantServer || got.Nodes != nil {
			t.Errorf("Describe(%q) = %+v, want context %s, server %s, no nodes", tt.context, got, tt.wantContext, tt.wantServer)
		}
	}
}
