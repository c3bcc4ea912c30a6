package agentconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		Version:        SchemaVersion,
		Namespace:      "shop",
		WorkloadKind:   "Deployment",
		WorkloadName:   "cart",
		AgentImage:     "teledock/agent:v1",
		ManagerAddress: "traffic-manager.teledock:8081",
		Targets: []Target{
			{
				ServiceName: "cart", ServiceUID: "u1", ServicePortName: "http", ServicePort: 80,
				Protocol: TCP, TargetPort: "http", ContainerName: "app", ContainerPortName: "http",
				ContainerPort: 8080, AgentPort: 9900, Mode: ModeRename, RenamedPortName: "tm-http",
			},
			{
				ServiceName: "cart-dns", ServicePort: 53, Protocol: UDP, TargetPort: "5353",
				ContainerName: "app", ContainerPort: 5353, AgentPort: 9901, Mode: ModeRedirect,
			},
			{Protocol: TCP, ContainerName: "app", ContainerPortName: "debug", ContainerPort: 6060, AgentPort: 9902, Mode: ModeRedirect},
		},
	}
}

func TestParseRoundTrip(t *testing.T) {
	want := validConfig()
	want.Replace = []string{"app"}
	js, err := want.JSON()
	if err != nil {
		t.Fatal(err)
	}
	ym, err := want.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"json", js},
		{"yaml", ym},
		{"unknown fields are ignored", []byte(strings.Replace(string(js), `"version":1`, `"version":1,"fromTheFuture":true`, 1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.data)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, tc.data)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"version 0", func(c *Config) { c.Version = 0 }, "version 0, want 1..1"},
		{"future version", func(c *Config) { c.Version = SchemaVersion + 1 }, "version 2"},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "no namespace"},
		{"no workload", func(c *Config) { c.WorkloadName = "" }, "no workload kind or name"},
		{"no image", func(c *Config) { c.AgentImage = "" }, "no agent image"},
		{"no manager", func(c *Config) { c.ManagerAddress = "" }, "no manager address"},
		{"no targets", func(c *Config) { c.Targets = nil }, "no targets"},
		{"sctp", func(c *Config) { c.Targets[0].Protocol = "SCTP" }, `target 0: protocol "SCTP", want TCP or UDP`},
		{"no container", func(c *Config) { c.Targets[1].ContainerName = "" }, "target 1: no container name"},
		{"no agent port", func(c *Config) { c.Targets[1].AgentPort = 0 }, "must be set"},
		{"agent port is app port", func(c *Config) { c.Targets[1].AgentPort = 5353 }, "agent port 5353 is the container port"},
		{"bad mode", func(c *Config) { c.Targets[2].Mode = "steal" }, `mode "steal"`},
		{"rename without new name", func(c *Config) { c.Targets[0].RenamedPortName = "" }, "needs containerPortName and renamedPortName"},
		{"shared agent port, same backend", func(c *Config) {
			t := c.Targets[0]
			t.ServiceName = "cart-canary"
			c.Targets = append(c.Targets, t)
		}, ""},
		{"shared agent port, different backends", func(c *Config) { c.Targets[2].AgentPort = 9900 },
			"agent port 9900 serves both app:8080/TCP and app:6060/TCP"},
		{"health port set", func(c *Config) { c.HealthPort = 7000 }, ""},
		{"default health port is an agent port", func(c *Config) { c.Targets[2].AgentPort = DefaultHealthPort },
			"target 2: health port 9899 is also an agent or container port"},
		{"health port is an app port", func(c *Config) { c.HealthPort = 5353 },
			"target 1: health port 5353 is also an agent or container port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		invalid    bool
	}{
		{"garbage", "{", false},
		{"port out of range", `{"version":1,"targets":[{"agentPort":70000}]}`, false},
		{"valid syntax, invalid config", `{"version":1}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got := errors.Is(err, ErrInvalid); got != tc.invalid {
				t.Errorf("errors.Is(%v, ErrInvalid) = %v, want %v", err, got, tc.invalid)
			}
		})
	}
}

func TestMatchesPort(t *testing.T) {
	c := validConfig()
	for _, tc := range []struct {
		name   string
		target Target
		id     string
		want   bool
	}{
		{"empty matches", c.Targets[0], "", true},
		{"service port name", c.Targets[0], "http", true},
		{"service port number", c.Targets[0], "80", true},
		{"container port number is not the service's", c.Targets[0], "8080", false},
		{"service-less by container port name", c.Targets[2], "debug", true},
		{"service-less by container port number", c.Targets[2], "6060", true},
		{"other", c.Targets[1], "http", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.target.MatchesPort(tc.id); got != tc.want {
				t.Errorf("MatchesPort(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

func TestEffectiveHealthPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  uint16
		want uint16
	}{
		{"unset", 0, DefaultHealthPort},
		{"set", 7000, 7000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (Config{HealthPort: tc.set}).EffectiveHealthPort(); got != tc.want {
				t.Errorf("EffectiveHealthPort() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestProtocolNetwork(t *testing.T) {
	for p, want := range map[Protocol]string{TCP: "tcp", UDP: "udp", "SCTP": ""} {
		if got := p.Network(); got != want {
			t.Errorf("%s.Network() = %q, want %q", p, got, want)
		}
	}
}
