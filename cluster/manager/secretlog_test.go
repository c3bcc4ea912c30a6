package manager

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// syncBuffer is a log destination that goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretValuesNotLogged: an intercept whose pod takes variables from a Secret (env and
// envFrom) and from a ConfigMap hands them to the client, and the manager's log at Debug level has
// none of their values, however the intercept went.
func TestSecretValuesNotLogged(t *testing.T) {
	const secretValue, fromValue = "s3cr3t-db-password", "s3cr3t-api-key"
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"},
		Data:       map[string][]byte{"password": []byte(secretValue), "API_KEY": []byte(fromValue)},
	}
	withSecrets := func(d *appsv1.Deployment) {
		c := &d.Spec.Template.Spec.Containers[0]
		c.Env = append(c.Env, corev1.EnvVar{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}})
		c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}})
	}
	objs := append(echoDeployment("echo", withSecrets), secret,
		echoService("echo", "echo", corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}))
	var logs syncBuffer
	fc := newFakeClusterLog(t, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Config{}, objs...)
	fc.startPod("echo-abc-old", "echo", true, running) // from before teledock
	client := fc.arriveClient("alice")

	done := make(chan *managerv1.InterceptInfo, 1)
	go func() {
		info, err := fc.create(&managerv1.CreateInterceptRequest{
			SessionId: client, Name: "echo", Port: "http", Destination: "127.0.0.1:9000", LocalPort: 9000,
		}, 10*time.Second)
		if err != nil {
			t.Errorf("CreateIntercept: %v", err)
		}
		done <- info
	}()
	fc.awaitRollout("echo", "")
	if err := fc.k8s.CoreV1().Pods("default").Delete(context.Background(), "echo-abc-old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fc.arriveAgent(fc.startPod("echo-abc-new", "echo", false, running))
	info := <-done
	if env := info.GetEnvironment(); env["DB_PASSWORD"] != secretValue || env["API_KEY"] != fromValue {
		t.Fatalf("environment = %q: the Secret's values did not arrive, so the check below proves nothing", env)
	}
	// Listing and removing pass the environment around too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := fc.client.ListIntercepts(ctx, &managerv1.ListInterceptsRequest{SessionId: client}); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.client.RemoveIntercept(ctx, &managerv1.RemoveInterceptRequest{SessionId: client, Name: "echo"}); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "intercept active") {
		t.Fatalf("the log does not cover the intercept:\n%s", out)
	}
	for _, v := range []string{secretValue, fromValue} {
		if strings.Contains(out, v) {
			t.Errorf("the manager's log holds a Secret's value %q:\n%s", v, out)
		}
	}
}
