package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
		exit int
	}{
		{fmt.Errorf("%w (connection %q)", errNotConnected, "default"), "NOT_CONNECTED", 9},
		{fmt.Errorf("intercept x: %w", refine(errUnknownWorkload, errors.New("no workload x"))), "NO_SUCH_WORKLOAD", 5},
		{fmt.Errorf("intercept x: %w", refine(errAgentNotReady, errors.New("deadline"))), "AGENT_NOT_READY", 8},
		{fmt.Errorf("intercept x: %w", refine(errPrecondition, errors.New("already intercepted"))), "REFUSED", 6},
		{fmt.Errorf("connect: %w", errNoManager), "NO_MANAGER", 4},
		{fmt.Errorf("connect: %w", errClusterAuth), "CLUSTER_AUTH", 3},
		{errors.New("something else"), "ERROR", 1},
	} {
		k := kindOf(tc.err)
		if k.code != tc.code || k.exit != tc.exit {
			t.Errorf("kindOf(%v) = %s exit %d, want %s exit %d", tc.err, k.code, k.exit, tc.code, tc.exit)
		}
		if tc.code != "ERROR" && k.hint == "" {
			t.Errorf("%s has no hint", tc.code)
		}
	}
	// Codes are unique: a program tells kinds apart by them; every kind has an exit code.
	seen := map[string]bool{}
	for _, k := range errorKinds {
		if k.exit < 2 || k.exit > 9 {
			t.Errorf("%s exits %d, not one of the documented kinds' codes", k.code, k.exit)
		}
		if seen[k.code] {
			t.Errorf("code %s twice", k.code)
		}
		seen[k.code] = true
	}
}

func TestReportError(t *testing.T) {
	newCmd := func(output string) *cobra.Command {
		c := &cobra.Command{Use: "x"}
		c.Flags().StringP("output", "o", "", "")
		_ = c.Flags().Set("output", output)
		return c
	}
	err := fmt.Errorf("%w (connection %q)", errNotConnected, "default")

	var stdout, stderr strings.Builder
	d := deps{stdout: &stdout, stderr: &stderr, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	reportError(d, newCmd("json"), err)
	var got errorJSON
	if jerr := json.Unmarshal([]byte(stdout.String()), &got); jerr != nil {
		t.Fatalf("-o json error is not JSON: %v\n%s", jerr, stdout.String())
	}
	if got.SchemaVersion != schemaVersion || got.Error.Code != "NOT_CONNECTED" || got.Error.Reason != "not connected" ||
		got.Error.Message != err.Error() || !strings.Contains(got.Error.Hint, "teledock connect") {
		t.Errorf("error JSON = %+v", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr with -o json: %q", stderr.String())
	}

	stdout.Reset()
	reportError(d, newCmd(""), err)
	if stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), "teledock: not connected") || !strings.Contains(stderr.String(), "Run `teledock connect` first.") {
		t.Errorf("text error: stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestEnvCommand(t *testing.T) {
	icpt := &fakeIntercepts{env: map[string]string{"DB_HOST": "db.app", "TOKEN": "s3cr3t"}}
	env := startTestDaemon(t, icpt)
	if err := runIntercept(context.Background(), env.d, interceptOpts("echo")); err != nil {
		t.Fatal(err)
	}
	env.stdout.Reset()
	if err := runEnv(context.Background(), env.d, envOptions{intercept: "echo", connection: "default", output: "json"}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		SchemaVersion int
		Intercept     string
		Environment   map[string]string
	}
	if err := json.Unmarshal(env.stdout.Bytes(), &got); err != nil || got.Environment["TOKEN"] != "s3cr3t" || got.Intercept != "echo" {
		t.Errorf("env -o json: %v %s", err, env.stdout.String())
	}
	env.stdout.Reset()
	if err := runEnv(context.Background(), env.d, envOptions{intercept: "echo", connection: "default"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.stdout.String(), "DB_HOST=db.app\n") {
		t.Errorf("env: %q", env.stdout.String())
	}
	if err := runEnv(context.Background(), env.d, envOptions{intercept: "nope", connection: "default"}); !errors.Is(err, errNoSuchIntercept) {
		t.Errorf("env of an unknown intercept: %v", err)
	}
}

// Cobra's own flag and argument errors are usage errors, of every command.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"connect", "--no-such-flag"},
		{"env"},                        // ExactArgs(1)
		{"leave", "a", "b", "--bogus"}, // flags come first
		{"status", "extra"},
	} {
		d := deps{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		root := newRootCmd(d)
		root.SetArgs(args)
		_, err := root.ExecuteC()
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		if k := kindOf(err); k.code != "USAGE" || k.exit != exitUsage {
			t.Errorf("%v: %v is %s (exit %d), want USAGE (exit %d)", args, err, k.code, k.exit, exitUsage)
		}
	}
}
