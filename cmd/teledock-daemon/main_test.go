package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	"teledock.dev/teledock/daemoncontainer/session"
)

func TestErrorCode(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	tests := []struct {
		name string
		err  error
		want daemonv1.ErrorCode
	}{
		{name: "none", want: daemonv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{name: "no manager", err: fmt.Errorf("arrive: %w", fmt.Errorf("namespace x: %w", session.ErrNoManager)), want: daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER},
		{name: "not ready", err: fmt.Errorf("version: %w", session.ErrManagerNotReady), want: daemonv1.ErrorCode_ERROR_CODE_MANAGER_NOT_READY},
		{name: "forbidden", err: fmt.Errorf("list pods: %w", apierrors.NewForbidden(pods, "", errors.New("rbac"))), want: daemonv1.ErrorCode_ERROR_CODE_CLUSTER_AUTH},
		{name: "unauthorized", err: fmt.Errorf("list pods: %w", apierrors.NewUnauthorized("bad token")), want: daemonv1.ErrorCode_ERROR_CODE_CLUSTER_AUTH},
		{name: "other", err: errors.New("connection refused"), want: daemonv1.ErrorCode_ERROR_CODE_UNAVAILABLE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorCode(tt.err); got != tt.want {
				t.Errorf("errorCode(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{name: "no token", env: map[string]string{}, wantErr: true},
		{
			name: "defaults",
			env:  map[string]string{"TELEDOCK_TOKEN": "t"},
			want: config{token: "t", kubeconfig: "/etc/teledock/kubeconfig", managerNamespace: "teledock", apiAddr: ":7777", name: "default",
				transport: session.TransportAuto},
		},
		{
			name: "all set",
			env: map[string]string{
				"TELEDOCK_TOKEN": "t", "TELEDOCK_KUBECONFIG": "/k", "TELEDOCK_CONTEXT": "c", "TELEDOCK_NAMESPACE": "n",
				"TELEDOCK_MANAGER_NAMESPACE": "m", "TELEDOCK_API_ADDR": ":1", "TELEDOCK_NAME": "x", "TELEDOCK_DEBUG": "1",
				"TELEDOCK_TRANSPORT": "direct",
			},
			want: config{token: "t", kubeconfig: "/k", context: "c", namespace: "n", managerNamespace: "m", apiAddr: ":1", name: "x", debug: true,
				transport: session.TransportDirect},
		},
		{name: "bad transport", env: map[string]string{"TELEDOCK_TOKEN": "t", "TELEDOCK_TRANSPORT": "carrier-pigeon"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := configFromEnv(func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRemoveEnvFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"web.env", "api.env", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("A=1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeEnvFiles(dir, slog.New(slog.DiscardHandler))
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name() != "keep.txt" {
		t.Errorf("left %v, want only keep.txt", left)
	}
}
