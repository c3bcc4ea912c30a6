package inject

import (
	"errors"
	"reflect"
	"testing"

	"teledock.dev/teledock/agent/agentconfig"
)

func TestParseInjectPorts(t *testing.T) {
	const ann = AnnotationInjectPorts
	for _, tc := range []struct {
		name    string
		value   string
		want    []PortRef
		wantErr string
	}{
		{name: "one name", value: "http", want: []PortRef{{Name: "http"}}},
		{name: "one number", value: "8080", want: []PortRef{{Number: 8080}}},
		{name: "protocols and spaces", value: " http/TCP , 53/udp,grpc ", want: []PortRef{
			{Name: "http", Protocol: agentconfig.TCP}, {Number: 53, Protocol: agentconfig.UDP}, {Name: "grpc"},
		}},
		{name: "repeats dropped", value: "http,http,8080/TCP,8080/TCP", want: []PortRef{
			{Name: "http"}, {Number: 8080, Protocol: agentconfig.TCP},
		}},
		{name: "empty", value: " ", wantErr: `bad annotation teledock.dev/inject-container-ports: empty value: ` + injectPortsFormat},
		{name: "empty item", value: "http,,grpc", wantErr: `bad annotation teledock.dev/inject-container-ports: bad item "" (empty item): ` + injectPortsFormat},
		{name: "trailing comma", value: "http,", wantErr: `bad item "" (empty item)`},
		{name: "sctp", value: "http/SCTP", wantErr: `bad annotation teledock.dev/inject-container-ports: bad item "http/SCTP" (protocol "SCTP" is not TCP or UDP): ` + injectPortsFormat},
		{name: "port zero", value: "0", wantErr: `bad item "0" (port number 0 is not in 1-65535)`},
		{name: "port too big", value: "65536/TCP", wantErr: `bad item "65536/TCP" (port number 65536 is not in 1-65535)`},
		{name: "upper case name", value: "HTTP", wantErr: `bad item "HTTP" ("HTTP" is not a port name: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); must contain at least one letter (a-z))`},
		{name: "name too long", value: "a-very-long-port-name", wantErr: `bad item "a-very-long-port-name" ("a-very-long-port-name" is not a port name: must be no more than 15 characters)`},
		{name: "double slash", value: "http/TCP/UDP", wantErr: `bad item "http/TCP/UDP" (protocol "TCP/UDP" is not TCP or UDP)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInjectPorts(ann, tc.value)
			if tc.wantErr != "" {
				assertErrContains(t, err, tc.wantErr)
				if !errors.Is(err, ErrBadAnnotation) {
					t.Errorf("%v is not ErrBadAnnotation", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInjectPorts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        []PortRef
		wantErr     string
	}{
		{name: "none", annotations: map[string]string{"other": "x"}},
		{name: "teledock", annotations: map[string]string{AnnotationInjectPorts: "http"}, want: []PortRef{{Name: "http"}}},
		{name: "telepresence", annotations: map[string]string{LegacyAnnotationInjectPorts: "9090/UDP"},
			want: []PortRef{{Number: 9090, Protocol: agentconfig.UDP}}},
		{name: "both agree", annotations: map[string]string{AnnotationInjectPorts: "http", LegacyAnnotationInjectPorts: " http"},
			want: []PortRef{{Name: "http"}}},
		{name: "both disagree", annotations: map[string]string{AnnotationInjectPorts: "http", LegacyAnnotationInjectPorts: "grpc"},
			wantErr: `bad annotation: teledock.dev/inject-container-ports="http" and telepresence.getambassador.io/inject-container-ports="grpc" disagree; keep one of them`},
		{name: "legacy name in error", annotations: map[string]string{LegacyAnnotationInjectPorts: "x/y"},
			wantErr: `bad annotation telepresence.getambassador.io/inject-container-ports: bad item "x/y"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := InjectPorts(tc.annotations)
			if tc.wantErr != "" {
				assertErrContains(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPortRefString(t *testing.T) {
	for _, tc := range []struct {
		ref  PortRef
		want string
	}{
		{PortRef{Name: "http"}, "http"},
		{PortRef{Number: 53, Protocol: agentconfig.UDP}, "53/UDP"},
	} {
		if got := tc.ref.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.ref, got, tc.want)
		}
	}
}
