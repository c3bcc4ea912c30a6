package install

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestInstallOnCluster installs, re-installs (an upgrade that must change nothing) and uninstalls on
// a real cluster. It runs only when TELEDOCK_TEST_KUBECONFIG names a kubeconfig and
// TELEDOCK_TEST_VERSION an image tag present on the nodes (teledock/traffic-manager:VERSION).
// TELEDOCK_TEST_KEEP=1 leaves the install in place.
func TestInstallOnCluster(t *testing.T) {
	kubeconfig, version := os.Getenv("TELEDOCK_TEST_KUBECONFIG"), os.Getenv("TELEDOCK_TEST_VERSION")
	if kubeconfig == "" || version == "" {
		t.Skip("set TELEDOCK_TEST_KUBECONFIG and TELEDOCK_TEST_VERSION to install on a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := Config{
		Kubeconfig: kubeconfig,
		Namespace:  "teledock",
		Version:    version,
		Timeout:    90 * time.Second,
		Events:     func(e Event) { t.Logf("event %+v", e) },
		Log:        testLogger(t),
	}
	for i := range 2 {
		start := time.Now()
		if err := Install(ctx, cfg); err != nil {
			t.Fatalf("install #%d: %v", i+1, err)
		}
		t.Logf("install #%d took %v", i+1, time.Since(start).Round(time.Millisecond))
	}
	if os.Getenv("TELEDOCK_TEST_KEEP") != "" {
		return
	}
	if err := Uninstall(ctx, cfg); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if err := Uninstall(ctx, cfg); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
}
