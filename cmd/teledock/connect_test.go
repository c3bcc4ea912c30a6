package main

import (
	"cmp"
	"errors"
	"testing"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
)

func TestConnectDone(t *testing.T) {
	tests := []struct {
		name      string
		st        *daemonv1.StatusResponse
		transport string // default auto
		wantDone  bool
		wantErr   error
	}{
		{name: "starting", st: &daemonv1.StatusResponse{SessionState: "connecting"}},
		{name: "manager not ready yet", st: &daemonv1.StatusResponse{SessionState: "connecting", LastErrorCode: daemonv1.ErrorCode_ERROR_CODE_MANAGER_NOT_READY}},
		{name: "unreachable keeps waiting", st: &daemonv1.StatusResponse{SessionState: "connecting", LastErrorCode: daemonv1.ErrorCode_ERROR_CODE_UNAVAILABLE}},
		{name: "no manager", st: &daemonv1.StatusResponse{SessionState: "connecting", LastErrorCode: daemonv1.ErrorCode_ERROR_CODE_NO_MANAGER}, wantDone: true, wantErr: errNoManager},
		{name: "auth", st: &daemonv1.StatusResponse{SessionState: "connecting", LastErrorCode: daemonv1.ErrorCode_ERROR_CODE_CLUSTER_AUTH}, wantDone: true, wantErr: errClusterAuth},
		{name: "session up, network starting", st: &daemonv1.StatusResponse{SessionState: "connected"}},
		{name: "ready", st: &daemonv1.StatusResponse{SessionState: "connected", NetworkReady: true}, wantDone: true},
		{name: "network failed", st: &daemonv1.StatusResponse{SessionState: "connected", NetworkError: "built without netstack"}, wantDone: true, wantErr: errNetwork},
		{name: "auto on the port-forward", st: &daemonv1.StatusResponse{SessionState: "connected", NetworkReady: true,
			Transport: "port-forward", TransportError: "not installed"}, wantDone: true},
		{name: "direct in use", transport: "direct", st: &daemonv1.StatusResponse{SessionState: "connected", NetworkReady: true,
			Transport: "direct"}, wantDone: true},
		{name: "direct required but unusable", transport: "direct", st: &daemonv1.StatusResponse{SessionState: "connected",
			Transport: "port-forward", TransportError: "not installed"}, wantDone: true, wantErr: errDirectUnavailable},
		{name: "direct: still arriving", transport: "direct", st: &daemonv1.StatusResponse{SessionState: "connecting"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done, err := connectDone(tt.st, cmp.Or(tt.transport, "auto"))
			if done != tt.wantDone || !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Errorf("connectDone = %v, %v; want %v, %v", done, err, tt.wantDone, tt.wantErr)
			}
		})
	}
}
