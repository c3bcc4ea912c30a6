package inject

import (
	"context"
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"teledock.dev/teledock/agent/agentconfig"
)

func TestConfigMapStore(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	store, err := NewConfigMapStore(client)
	if err != nil {
		t.Fatal(err)
	}
	cart := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	other := cart
	other.WorkloadName = "checkout"

	getCM := func(t *testing.T) (*corev1.ConfigMap, error) {
		t.Helper()
		return client.CoreV1().ConfigMaps("shop").Get(ctx, ConfigMapName, metav1.GetOptions{})
	}

	t.Run("nothing stored", func(t *testing.T) {
		_, err := store.AgentConfig(ctx, "shop", "cart")
		if !errors.Is(err, ErrNoConfig) {
			t.Fatalf("err = %v, want ErrNoConfig", err)
		}
	})
	t.Run("put creates the configmap", func(t *testing.T) {
		if err := store.Put(ctx, cart); err != nil {
			t.Fatal(err)
		}
		cm, err := getCM(t)
		if err != nil {
			t.Fatal(err)
		}
		if cm.Labels[managedByLabel] != "teledock" {
			t.Errorf("labels %v", cm.Labels)
		}
	})
	t.Run("put adds a key", func(t *testing.T) {
		if err := store.Put(ctx, other); err != nil {
			t.Fatal(err)
		}
		cm, _ := getCM(t)
		if len(cm.Data) != 2 {
			t.Errorf("keys %v", cm.Data)
		}
	})
	t.Run("get", func(t *testing.T) {
		got, err := store.AgentConfig(ctx, "shop", "cart")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, cart) {
			t.Errorf("got %+v, want %+v", got, cart)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := store.AgentConfig(ctx, "shop", "nope"); !errors.Is(err, ErrNoConfig) {
			t.Fatalf("err = %v, want ErrNoConfig", err)
		}
	})
	t.Run("put refuses an invalid config", func(t *testing.T) {
		bad := cart
		bad.AgentImage = ""
		if err := store.Put(ctx, bad); !errors.Is(err, agentconfig.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("delete one", func(t *testing.T) {
		if err := store.Delete(ctx, "shop", "cart"); err != nil {
			t.Fatal(err)
		}
		if err := store.Delete(ctx, "shop", "cart"); err != nil {
			t.Fatalf("second delete: %v", err)
		}
		cm, _ := getCM(t)
		if _, ok := cm.Data["cart"]; ok || len(cm.Data) != 1 {
			t.Errorf("keys %v", cm.Data)
		}
	})
	t.Run("delete the last removes the configmap", func(t *testing.T) {
		if err := store.Delete(ctx, "shop", "checkout"); err != nil {
			t.Fatal(err)
		}
		if _, err := getCM(t); !apierrors.IsNotFound(err) {
			t.Errorf("configmap still there: %v", err)
		}
		if err := store.Delete(ctx, "shop", "checkout"); err != nil {
			t.Errorf("delete without configmap: %v", err)
		}
	})
}

func TestConfigMapStoreBadData(t *testing.T) {
	ctx := context.Background()
	stray := cartWorkload()
	cfg := mustPlan(t, svc("cart", cartSelector, sport("http", 80, intstr.FromString("http"), "")))
	cfg.WorkloadName = "someone-else"
	js, _ := cfg.JSON()
	client := fake.NewClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: stray.Namespace},
		Data:       map[string]string{"garbage": "{", "cart": string(js)},
	})
	store, _ := NewConfigMapStore(client)
	for _, tc := range []struct{ key, wantErr string }{
		{"garbage", "configmap shop/teledock-agents key garbage: parse agent config"},
		{"cart", "configmap shop/teledock-agents key cart: invalid agent config: it is for shop/someone-else"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, err := store.AgentConfig(ctx, "shop", tc.key)
			assertErrContains(t, err, tc.wantErr)
			if errors.Is(err, ErrNoConfig) {
				t.Errorf("bad data reported as no config: %v", err)
			}
		})
	}
}
