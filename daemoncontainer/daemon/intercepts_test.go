package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/daemoncontainer/intercept"
)

// fakeIntercepts answers with err, or records the request and returns an intercept.
type fakeIntercepts struct {
	err     error
	got     intercept.Request
	list    []*managerv1.InterceptInfo
	volumes string // where DialVolumes connects
	dialed  []string
}

func (f *fakeIntercepts) DialVolumes(ctx context.Context, name string) (net.Conn, error) {
	f.dialed = append(f.dialed, name)
	if f.err != nil {
		return nil, f.err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.volumes)
}

func (f *fakeIntercepts) Create(_ context.Context, req intercept.Request) (*managerv1.InterceptInfo, error) {
	f.got = req
	if f.err != nil {
		return nil, f.err
	}
	return &managerv1.InterceptInfo{Id: "i-1", Name: req.Name}, nil
}

func (f *fakeIntercepts) Remove(context.Context, string) error { return f.err }

func (f *fakeIntercepts) List() []*managerv1.InterceptInfo { return f.list }

func (f *fakeIntercepts) Counters(context.Context) (map[string]*managerv1.InterceptCounters, error) {
	out := make(map[string]*managerv1.InterceptCounters)
	for _, ic := range f.list {
		if c := ic.GetCounters(); c != nil {
			out[ic.GetName()] = c
		}
	}
	return out, nil
}

func (f *fakeIntercepts) Workloads(context.Context, string) (*managerv1.ListWorkloadsResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &managerv1.ListWorkloadsResponse{}, nil
}

func dialTest(t *testing.T, d *Daemon) daemonv1.DaemonClient {
	t.Helper()
	conn, err := Dial(d.Addr().String(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return daemonv1.NewDaemonClient(conn)
}

func TestCreateInterceptRequest(t *testing.T) {
	f := &fakeIntercepts{}
	client := dialTest(t, startDaemonWith(t, &fakeSession{}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := client.CreateIntercept(ctx, &daemonv1.CreateInterceptRequest{
		Name: "echo", Workload: "echo-wl", Service: "svc", ServicePort: "http", LocalPort: 8080,
		Address: "172.17.0.3", Mechanism: "tcp", Replace: true,
		ToPod: []*managerv1.ToPod{{Port: 9000}, {Port: 53, Protocol: managerv1.Protocol_PROTOCOL_UDP}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := intercept.Request{
		Name: "echo", Workload: "echo-wl", Service: "svc", ServicePort: "http", LocalPort: 8080,
		Address: netip.MustParseAddr("172.17.0.3"), Mechanism: "tcp", Replace: true,
		ToPod: []intercept.ToPod{{Port: 9000}, {Port: 53, UDP: true}},
	}
	if !reflect.DeepEqual(f.got, want) {
		t.Errorf("request = %+v, want %+v", f.got, want)
	}

	for _, bad := range []*daemonv1.CreateInterceptRequest{
		{Name: "x", LocalPort: 70000},
		{Name: "x", Address: "my-container"},
		{Name: "x", ToPod: []*managerv1.ToPod{{Port: 0}}},
	} {
		if _, err := client.CreateIntercept(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: err = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestToStatus(t *testing.T) {
	managerErr := status.Error(codes.DeadlineExceeded, "traffic-agent not ready: pod echo-1: ImagePullBackOff")
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantDetail daemonv1.ErrorCode
		wantMsg    string // "" means not checked
	}{
		{name: "manager's reason kept", err: fmt.Errorf("create intercept echo: %w", managerErr),
			wantCode: codes.DeadlineExceeded, wantMsg: "traffic-agent not ready: pod echo-1: ImagePullBackOff"},
		{name: "manager not found", err: fmt.Errorf("create: %w", status.Error(codes.NotFound, "workload nope not found")),
			wantCode: codes.NotFound, wantMsg: "workload nope not found"},
		{name: "local port", err: fmt.Errorf("%w: 127.0.0.1:8080 is the destination of intercept a", intercept.ErrLocalPortInUse),
			wantCode: codes.FailedPrecondition, wantDetail: daemonv1.ErrorCode_ERROR_CODE_LOCAL_PORT_IN_USE},
		{name: "to-pod port", err: fmt.Errorf("%w 127.0.0.1:53/UDP: address in use", intercept.ErrToPodPortInUse),
			wantCode: codes.FailedPrecondition, wantDetail: daemonv1.ErrorCode_ERROR_CODE_TO_POD_PORT_IN_USE},
		{name: "not connected", err: intercept.ErrNotConnected,
			wantCode: codes.Unavailable, wantDetail: daemonv1.ErrorCode_ERROR_CODE_NOT_CONNECTED},
		{name: "no such intercept", err: fmt.Errorf("%w: echo", intercept.ErrNotFound), wantCode: codes.NotFound},
		{name: "invalid", err: fmt.Errorf("%w: mechanism http", intercept.ErrInvalid), wantCode: codes.InvalidArgument},
		{name: "busy", err: intercept.ErrBusy, wantCode: codes.Aborted},
		{name: "local deadline", err: fmt.Errorf("x: %w", context.DeadlineExceeded), wantCode: codes.DeadlineExceeded},
		{name: "other", err: errors.New("boom"), wantCode: codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through the real server, so that details survive the wire.
			client := dialTest(t, startDaemonWith(t, &fakeSession{}, &fakeIntercepts{err: tt.err}))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := client.CreateIntercept(ctx, &daemonv1.CreateInterceptRequest{Name: "echo", LocalPort: 8080})
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Errorf("code = %v (%v), want %v", st.Code(), err, tt.wantCode)
			}
			if tt.wantMsg != "" && st.Message() != tt.wantMsg {
				t.Errorf("message = %q, want %q", st.Message(), tt.wantMsg)
			}
			var got daemonv1.ErrorCode
			for _, d := range st.Details() {
				if ed, ok := d.(*daemonv1.ErrorDetail); ok {
					got = ed.GetCode()
				}
			}
			if got != tt.wantDetail {
				t.Errorf("detail = %v, want %v", got, tt.wantDetail)
			}
		})
	}
}

func TestStatusListsIntercepts(t *testing.T) {
	f := &fakeIntercepts{list: []*managerv1.InterceptInfo{
		{Name: "a", Client: "me@laptop"},
		{Name: "b", Client: "me@laptop"},
	}}
	client := dialTest(t, startDaemonWith(t, &fakeSession{info: SessionInfo{State: "connected"}}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.Status(ctx, &daemonv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetIntercepts() != 2 || len(st.GetInterceptList()) != 2 || st.GetInterceptList()[1].GetName() != "b" || st.GetInterceptList()[1].GetOwner() != "me@laptop" {
		t.Errorf("status intercepts = %d %v", st.GetIntercepts(), st.GetInterceptList())
	}
}

func TestCreateInterceptPassesFilter(t *testing.T) {
	f := &fakeIntercepts{}
	client := dialTest(t, startDaemonWith(t, &fakeSession{}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	filter := &managerv1.HttpFilter{
		Headers: []*managerv1.HttpHeaderMatch{{Name: "x-dev", Value: "alice"}},
		Path:    &managerv1.HttpFilter_PathPrefix{PathPrefix: "/api"}, Plaintext: true,
	}
	if _, err := client.CreateIntercept(ctx, &daemonv1.CreateInterceptRequest{Name: "echo", HttpFilter: filter, Wiretap: true}); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(f.got.HTTPFilter, filter) || !f.got.Wiretap {
		t.Errorf("request filter %v wiretap %v, want %v and a wiretap", f.got.HTTPFilter, f.got.Wiretap, filter)
	}
}

func TestStatusShowsFiltersAndCounters(t *testing.T) {
	counters := &managerv1.InterceptCounters{Intercepted: 3, Copied: 2, Dropped: 1}
	f := &fakeIntercepts{list: []*managerv1.InterceptInfo{
		{Name: "a", Client: "me@laptop", HttpFilter: "header x-dev=alice", Counters: counters},
		{Name: "b", Client: "me@laptop"},
	}}
	client := dialTest(t, startDaemonWith(t, &fakeSession{info: SessionInfo{State: "connected"}}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.Status(ctx, &daemonv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	l := st.GetInterceptList()
	if len(l) != 2 || l[0].GetHttpFilter() != "header x-dev=alice" || !proto.Equal(l[0].GetCounters(), counters) || l[1].GetCounters() != nil {
		t.Errorf("status intercepts %v", l)
	}
}
