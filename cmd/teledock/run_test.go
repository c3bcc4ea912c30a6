package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRunArgs(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		env            string
		wantConnection string
		wantArgs       []string
		wantErr        string // substring; "" means success
	}{
		{name: "image only", args: []string{"alpine"}, wantConnection: "default", wantArgs: []string{"alpine"}},
		{name: "common flags", args: []string{"-d", "--rm", "-e", "A=1", "-v", "/x:/y", "--name", "web", "-it", "alpine", "sh"},
			wantConnection: "default", wantArgs: []string{"-d", "--rm", "-e", "A=1", "-v", "/x:/y", "--name", "web", "-it", "alpine", "sh"}},
		{name: "value in same arg", args: []string{"--env=A=1", "-eB=2", "--workdir=/w", "alpine"}, wantConnection: "default",
			wantArgs: []string{"--env=A=1", "-eB=2", "--workdir=/w", "alpine"}},
		{name: "grouped short with value", args: []string{"-ite", "A=1", "alpine"}, wantConnection: "default", wantArgs: []string{"-ite", "A=1", "alpine"}},
		{name: "container command flags are not docker's", args: []string{"alpine", "nc", "-p", "80", "--network", "x"},
			wantConnection: "default", wantArgs: []string{"alpine", "nc", "-p", "80", "--network", "x"}},
		{name: "value looking like a refused flag", args: []string{"-e", "--dns", "alpine"}, wantConnection: "default", wantArgs: []string{"-e", "--dns", "alpine"}},
		{name: "double dash", args: []string{"--rm", "--", "alpine"}, wantConnection: "default", wantArgs: []string{"--rm", "--", "alpine"}},
		{name: "leading connection", args: []string{"--connection", "dev", "alpine"}, wantConnection: "dev", wantArgs: []string{"alpine"}},
		{name: "leading connection with =", args: []string{"--connection=dev", "--rm", "alpine"}, wantConnection: "dev", wantArgs: []string{"--rm", "alpine"}},
		{name: "connection from env", args: []string{"alpine"}, env: "envconn", wantConnection: "envconn", wantArgs: []string{"alpine"}},
		{name: "flag beats env", args: []string{"--connection", "dev", "alpine"}, env: "envconn", wantConnection: "dev", wantArgs: []string{"alpine"}},

		{name: "no image", args: []string{"--rm"}, wantErr: "no image"},
		{name: "nothing", args: nil, wantErr: "no image"},
		{name: "connection without name", args: []string{"--connection"}, wantErr: "needs a connection name"},
		{name: "bad connection name", args: []string{"--connection", "../x", "alpine"}, wantErr: "invalid connection name"},
		{name: "network", args: []string{"--network", "host", "alpine"}, wantErr: "--network cannot be used"},
		{name: "network with =", args: []string{"--network=host", "alpine"}, wantErr: "--network cannot be used"},
		{name: "net", args: []string{"--net", "host", "alpine"}, wantErr: "--net cannot be used"},
		{name: "-p", args: []string{"-p", "80:80", "alpine"}, wantErr: "-p cannot be used"},
		{name: "-p grouped", args: []string{"-dp", "80:80", "alpine"}, wantErr: "-p cannot be used"},
		{name: "--publish", args: []string{"--publish=80:80", "alpine"}, wantErr: "--publish cannot be used"},
		{name: "-P", args: []string{"-P", "alpine"}, wantErr: "-P cannot be used"},
		{name: "--publish-all", args: []string{"--publish-all", "alpine"}, wantErr: "--publish-all cannot be used"},
		{name: "--dns", args: []string{"--dns", "1.1.1.1", "alpine"}, wantErr: "--dns cannot be used"},
		{name: "--hostname", args: []string{"--hostname", "x", "alpine"}, wantErr: "--hostname cannot be used"},
		{name: "-h with image", args: []string{"-h", "x", "alpine"}, wantErr: "-h cannot be used"},
		{name: "--add-host", args: []string{"--add-host", "a:1.2.3.4", "alpine"}, wantErr: "--add-host cannot be used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRunArgs(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.connection != tt.wantConnection || !slices.Equal(got.dockerArgs, tt.wantArgs) {
				t.Errorf("got connection %q args %q, want %q %q", got.connection, got.dockerArgs, tt.wantConnection, tt.wantArgs)
			}
		})
	}
}

func TestParseRunArgsHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--connection", "x", "--help"}} {
		got, err := parseRunArgs(args, "")
		if err != nil || !got.help {
			t.Errorf("parseRunArgs(%q) = %+v, %v; want help", args, got, err)
		}
	}
}

func TestParseRunArgsIntercept(t *testing.T) {
	opts, err := parseRunArgs([]string{"--intercept", "echo", "--connection=c2", "-it", "alpine", "sh"}, "")
	if err != nil || opts.intercept != "echo" || opts.connection != "c2" || len(opts.dockerArgs) != 3 {
		t.Errorf("got %+v, %v", opts, err)
	}
	// After the image, --intercept is the container's own argument.
	opts, err = parseRunArgs([]string{"alpine", "--intercept", "x"}, "")
	if err != nil || opts.intercept != "" {
		t.Errorf("got %+v, %v", opts, err)
	}
	if _, err := parseRunArgs([]string{"--intercept="}, ""); err == nil {
		t.Error("an empty --intercept was accepted")
	}
}

func TestParseRunArgsNoPodEnv(t *testing.T) {
	opts, err := parseRunArgs([]string{"--intercept", "echo", "--no-pod-env", "alpine"}, "")
	if err != nil || !opts.noPodEnv || opts.intercept != "echo" || len(opts.dockerArgs) != 1 {
		t.Errorf("got %+v, %v", opts, err)
	}
}
