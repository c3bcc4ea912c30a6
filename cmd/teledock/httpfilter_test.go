package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	daemonv1 "teledock.dev/teledock/api/daemon/v1"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func TestHTTPFilterFlags(t *testing.T) {
	hdr := func(pairs ...string) []*managerv1.HttpHeaderMatch {
		var out []*managerv1.HttpHeaderMatch
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, &managerv1.HttpHeaderMatch{Name: pairs[i], Value: pairs[i+1]})
		}
		return out
	}
	tests := []struct {
		name    string
		opts    httpFilterOptions
		replace bool
		want    *managerv1.HttpFilter // nil: no filter
		wantErr string
	}{
		{name: "none"},
		{name: "headers", opts: httpFilterOptions{headers: []string{"x-dev=alice", "x-team=a|b"}},
			want: &managerv1.HttpFilter{Headers: hdr("x-dev", "alice", "x-team", "a|b")}},
		{name: "value with =", opts: httpFilterOptions{headers: []string{"x-q=a=b"}}, want: &managerv1.HttpFilter{Headers: hdr("x-q", "a=b")}},
		{name: "auto", opts: httpFilterOptions{headers: []string{"auto"}, random: bytes.NewReader([]byte{1, 2, 3, 4, 5, 6, 7, 8})},
			want: &managerv1.HttpFilter{Headers: hdr(autoHeader, "0102030405060708")}},
		{name: "path equal and plaintext", opts: httpFilterOptions{pathEqual: "/api", plaintext: true},
			want: &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathEqual{PathEqual: "/api"}, Plaintext: true}},
		{name: "path prefix", opts: httpFilterOptions{pathPrefix: "/api/"}, want: &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathPrefix{PathPrefix: "/api/"}}},
		{name: "path regex", opts: httpFilterOptions{pathRegex: "/v[0-9]+/.*"}, want: &managerv1.HttpFilter{Path: &managerv1.HttpFilter_PathRegex{PathRegex: "/v[0-9]+/.*"}}},
		{name: "wiretap of everything", opts: httpFilterOptions{wiretap: true}},
		{name: "wiretap with a filter", opts: httpFilterOptions{wiretap: true, headers: []string{"x-dev=alice"}}, want: &managerv1.HttpFilter{Headers: hdr("x-dev", "alice")}},
		{name: "two paths", opts: httpFilterOptions{pathEqual: "/a", pathPrefix: "/b"}, wantErr: "at most one of --http-path-equal"},
		{name: "no =", opts: httpFilterOptions{headers: []string{"x-dev"}}, wantErr: `--http-header "x-dev": want NAME=VALUE`},
		{name: "no name", opts: httpFilterOptions{headers: []string{"=alice"}}, wantErr: "want NAME=VALUE"},
		{name: "auto twice", opts: httpFilterOptions{headers: []string{"auto", "auto"}}, wantErr: "auto given twice"},
		{name: "bad value regex", opts: httpFilterOptions{headers: []string{"x-dev=("}}, wantErr: "--http-header x-dev=("},
		{name: "bad header name", opts: httpFilterOptions{headers: []string{"x dev=a"}}, wantErr: "--http-header x dev=a"},
		{name: "bad path regex", opts: httpFilterOptions{pathRegex: "/a("}, wantErr: "--http-path-regex /a("},
		{name: "replace", opts: httpFilterOptions{headers: []string{"x-dev=alice"}}, replace: true, wantErr: "--replace cannot be combined"},
		{name: "replace wiretap", opts: httpFilterOptions{wiretap: true}, replace: true, wantErr: "--replace cannot be combined"},
		{name: "plaintext alone", opts: httpFilterOptions{plaintext: true}, wantErr: "--http-plaintext goes with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.opts.filter(tt.replace)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errBadFilter) {
					t.Fatalf("err = %v, want an errBadFilter with %q", err, tt.wantErr)
				}
				if k := kindOf(err); k.code != "USAGE" {
					t.Errorf("kind %s, want USAGE", k.code)
				}
				return
			}
			if err != nil || !proto.Equal(got, tt.want) {
				t.Errorf("filter = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPersonalIDIsRandom(t *testing.T) {
	a, err := httpFilterOptions{}.personalID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := httpFilterOptions{}.personalID()
	if len(a) != 16 || a == b {
		t.Errorf("personal ids %q %q, want 16 random hex digits each", a, b)
	}
}

func TestRenderFilteredIntercept(t *testing.T) {
	tests := []struct {
		name string
		info *managerv1.InterceptInfo
		want string
	}{
		{
			name: "header filter",
			info: &managerv1.InterceptInfo{Name: "echo", State: "ACTIVE", Workload: "echo", WorkloadKind: "Deployment",
				Destination: "127.0.0.1:8080", HttpFilter: "header x-teledock-id=0102030405060708", Filter: &managerv1.HttpFilter{Plaintext: true}},
			want: `Using Deployment echo
intercepted
    Intercept name: echo
    State         : ACTIVE
    Workload kind : Deployment
    Destination   : 127.0.0.1:8080
    Intercepting  : HTTP requests that match the filter
    HTTP filter   : header x-teledock-id=0102030405060708 (--http-plaintext)
`,
		},
		{
			name: "wiretap",
			info: &managerv1.InterceptInfo{Name: "tap", State: "ACTIVE", Workload: "echo", WorkloadKind: "Deployment",
				Destination: "127.0.0.1:8081", Wiretap: true},
			want: `Using Deployment echo
intercepted
    Intercept name: tap
    State         : ACTIVE
    Workload kind : Deployment
    Destination   : 127.0.0.1:8081
    Intercepting  : copies of HTTP requests
    Wiretap       : all requests
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renderIntercept(tt.info); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestRunInterceptWithFilter: the flags reach the daemon as the filter, the block shows it, and
// -o json has it.
func TestRunInterceptWithFilter(t *testing.T) {
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	opts := interceptOpts("echo")
	opts.output = "json"
	opts.filter = httpFilterOptions{headers: []string{"x-dev=alice"}, pathPrefix: "/api", plaintext: true}
	if err := runIntercept(context.Background(), env.d, opts); err != nil {
		t.Fatal(err)
	}
	creates, _ := icpt.requests()
	if len(creates) != 1 || creates[0].HTTPFilter.GetPathPrefix() != "/api" || len(creates[0].HTTPFilter.GetHeaders()) != 1 || creates[0].Wiretap {
		t.Fatalf("creates = %+v", creates)
	}
	var got struct {
		HTTPFilter string         `json:"http_filter"`
		Filter     httpFilterJSON `json:"filter"`
		Wiretap    bool           `json:"wiretap"`
		Counters   *countersJSON  `json:"counters"`
	}
	if err := json.Unmarshal(env.stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, env.stdout)
	}
	if got.HTTPFilter != "header x-dev=alice, path prefix /api" || got.Filter.PathPrefix != "/api" || !got.Filter.Plaintext ||
		len(got.Filter.Headers) != 1 || got.Filter.Headers[0] != (httpHeaderJSON{"x-dev", "alice"}) || got.Counters == nil {
		t.Errorf("json:\n%s", env.stdout)
	}

	st, err := func() (*daemonv1.StatusResponse, error) {
		_, client, err := openDaemon(context.Background(), env.d, "default")
		if err != nil {
			return nil, err
		}
		defer client.Close()
		return client.Status(context.Background(), &daemonv1.StatusRequest{})
	}()
	if err != nil {
		t.Fatal(err)
	}
	if l := st.GetInterceptList(); len(l) != 1 || l[0].GetHttpFilter() != got.HTTPFilter || l[0].GetCounters() == nil {
		t.Errorf("status intercepts %v", l)
	}
}

// Bad filter flags fail before the daemon is asked: nothing changes in the cluster.
func TestRunInterceptBadFilter(t *testing.T) {
	icpt := &fakeIntercepts{}
	env := startTestDaemon(t, icpt)
	for _, f := range []httpFilterOptions{
		{headers: []string{"x-dev"}},
		{pathEqual: "/a", pathRegex: "/b"},
		{pathRegex: "("},
	} {
		opts := interceptOpts("echo")
		opts.filter = f
		if err := runIntercept(context.Background(), env.d, opts); !errors.Is(err, errBadFilter) {
			t.Errorf("%+v: err %v, want a bad filter", f, err)
		}
	}
	opts := interceptOpts("echo")
	opts.replace, opts.filter = true, httpFilterOptions{wiretap: true}
	if err := runIntercept(context.Background(), env.d, opts); !errors.Is(err, errBadFilter) {
		t.Errorf("--replace --wiretap: %v", err)
	}
	if creates, _ := icpt.requests(); len(creates) != 0 {
		t.Errorf("the daemon was asked: %v", creates)
	}
}

func TestRenderFilteredWorkloadsAndStatus(t *testing.T) {
	counters := &managerv1.InterceptCounters{Intercepted: 3, Copied: 5, Dropped: 1}
	got := renderWorkloads([]*managerv1.WorkloadInfo{{Name: "web", State: "intercepted", Intercepts: []*managerv1.InterceptInfo{
		{Name: "web", State: "ACTIVE", Client: "ann@laptop", HttpFilter: "header x-dev=ann", Counters: counters},
		{Name: "tap", State: "ACTIVE", Client: "bob@laptop", Wiretap: true, Counters: counters},
	}}})
	want := `web: intercepted
    Intercept name: web
    State         : ACTIVE
    Owner         : ann@laptop
    HTTP filter   : header x-dev=ann
    Requests      : 3 requests
    Intercept name: tap
    State         : ACTIVE
    Owner         : bob@laptop
    Wiretap       : all requests
    Requests      : 5 copies, 1 dropped
`
	if got != want {
		t.Errorf("list:\n%s\nwant:\n%s", got, want)
	}

	for _, tt := range []struct {
		s    interceptSummary
		want string
	}{
		{interceptSummary{Name: "a", Owner: "me"}, ""},
		{interceptSummary{HTTPFilter: "header x-dev=ann", Counters: &countersJSON{Intercepted: 3}}, " (HTTP filter header x-dev=ann; 3 requests)"},
		{interceptSummary{Wiretap: true, Counters: &countersJSON{Copied: 5, Dropped: 1}}, " (wiretap of all requests; 5 copies, 1 dropped)"},
		{interceptSummary{Wiretap: true, HTTPFilter: "path prefix /api"}, " (wiretap of path prefix /api)"},
	} {
		if got := tt.s.describe(); got != tt.want {
			t.Errorf("describe(%+v) = %q, want %q", tt.s, got, tt.want)
		}
	}
}
