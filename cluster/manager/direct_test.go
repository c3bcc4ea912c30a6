package manager

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func directObjects() (*corev1.Service, *corev1.Node, *corev1.Node) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "traffic-manager-direct", Namespace: "teledock"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "direct", Port: 8083, NodePort: 30123}}},
	}
	node := func(name, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip},
		}}}
	}
	return svc, node("a", "192.0.2.10"), node("b", "192.0.2.11")
}

func TestDirectInfo(t *testing.T) {
	svc, a, b := directObjects()
	m := newManager(t, Config{Direct: &DirectConfig{
		Service: "traffic-manager-direct", NodeName: "b", CACert: []byte("ca"), ServerName: "traffic-manager-direct.teledock.svc",
	}}, svc, a, b)
	ctx := context.Background()
	id := arrive(t, m)
	other := arrive(t, m)

	info, err := m.DirectInfo(ctx, &managerv1.SessionRequest{SessionId: id})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.11:30123", "192.0.2.10:30123"}; !slices.Equal(info.GetAddresses(), want) {
		t.Errorf("addresses %v, want %v (the manager's node first)", info.GetAddresses(), want)
	}
	if got, ok := m.DirectSession(info.GetToken()); !ok || got != id {
		t.Errorf("token's session = %q, %v; want %q", got, ok, id)
	}
	if _, ok := m.DirectSession("not-a-token"); ok {
		t.Error("an unknown token is admitted")
	}

	// Tokens are per session; a new one replaces the session's previous one.
	otherInfo, err := m.DirectInfo(ctx, &managerv1.SessionRequest{SessionId: other})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.DirectSession(otherInfo.GetToken()); got != other {
		t.Errorf("other token's session = %q, want %q", got, other)
	}
	again, err := m.DirectInfo(ctx, &managerv1.SessionRequest{SessionId: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.DirectSession(info.GetToken()); ok {
		t.Error("a replaced token is still admitted")
	}

	// A token ends with its session.
	if _, err := m.Depart(ctx, &managerv1.SessionRequest{SessionId: id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.DirectSession(again.GetToken()); ok {
		t.Error("a departed session's token is still admitted")
	}
	if _, ok := m.DirectSession(otherInfo.GetToken()); !ok {
		t.Error("another session's token went with the departed one")
	}
}

func TestDirectInfoNotInstalled(t *testing.T) {
	m := newManager(t, Config{})
	id := arrive(t, m)
	_, err := m.DirectInfo(context.Background(), &managerv1.SessionRequest{SessionId: id})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("DirectInfo without the direct transport: %v, want FailedPrecondition", err)
	}
}
