package manager

import (
	"testing"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func TestClientName(t *testing.T) {
	tests := []struct {
		info *managerv1.ClientInfo
		want string
	}{
		{&managerv1.ClientInfo{Name: "default", User: "alice", Hostname: "laptop"}, "alice@laptop"},
		{&managerv1.ClientInfo{Name: "default", Hostname: "laptop"}, "default@laptop"},
		{&managerv1.ClientInfo{Name: "default", User: "alice"}, "alice"},
	}
	for _, tt := range tests {
		if got := clientName(tt.info); got != tt.want {
			t.Errorf("clientName(%v) = %q, want %q", tt.info, got, tt.want)
		}
	}
}
