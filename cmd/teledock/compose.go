package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/compose"
)

// composeArgs are `teledock compose`'s arguments: docker compose's global flags, the subcommand
// and its arguments, and teledock's own flags.
type composeArgs struct {
	load    compose.LoadOptions
	global  []string // global flags passed on to docker compose, other than -f and -p
	command string
	args    []string // after the subcommand, passed on
	output  string   // generate -o json
	timeout time.Duration
	help    bool
}

func newComposeCmd(d deps) *cobra.Command {
	return &cobra.Command{
		Use:   "compose [docker compose flags] COMMAND [ARGS...]",
		Short: "Run a compose project whose services intercept and reach the cluster (x-teledock)",
		Long: "Run a compose project whose services carry x-teledock (or Telepresence's x-tele): marked services\n" +
			"join the network of a teledock daemon that the project runs as its service \"teledock\"; they resolve\n" +
			"and reach the cluster, and those with `intercept` receive the cluster's traffic for a workload, with\n" +
			"the pod's environment.\n\n" +
			"  teledock compose generate [-o json]  connect, intercept, and write .teledock/PROJECT/compose.teledock.yaml;\n" +
			"                                       prints the `docker compose -f ... -f ...` line that runs it\n" +
			"  teledock compose up [ARGS...]        generate, then docker compose up with the override\n" +
			"  teledock compose down [ARGS...]      docker compose down with the override, then remove what generate wrote\n" +
			"  teledock compose COMMAND [ARGS...]   any other docker compose command, with the override when there is one\n\n" +
			"docker compose's global flags (-f, -p, --profile, --env-file, --project-directory, ...) go before COMMAND.\n" +
			"--timeout D (before COMMAND) bounds the wait for each intercept's traffic-agent (default 2m).",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := parseComposeArgs(args)
			if err != nil {
				return err
			}
			if ca.help {
				return cmd.Help()
			}
			return runCompose(cmd.Context(), d, ca)
		},
	}
}

// composeGlobalWithValue are docker compose's global flags that take a value and that teledock
// passes on as they are.
var composeGlobalWithValue = []string{"--ansi", "--progress", "--parallel"}

// composeGlobalBool are docker compose's boolean global flags.
var composeGlobalBool = []string{"--dry-run", "--compatibility", "--all-resources", "--verbose", "--debug"}

// parseComposeArgs splits the arguments; only what decides the project is understood, the rest is
// docker compose's to judge.
func parseComposeArgs(args []string) (composeArgs, error) {
	ca := composeArgs{timeout: 2 * time.Minute}
	i := 0
	value := func(flag, inline string, hasInline bool) (string, error) {
		if hasInline {
			return inline, nil
		}
		if i+1 >= len(args) {
			return "", fmt.Errorf("compose: %s needs a value", flag)
		}
		i++
		return args[i], nil
	}
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		name, inline, hasInline := strings.Cut(a, "=")
		// -fFILE and -pNAME, as docker compose (pflag) takes them.
		if len(name) > 2 && (strings.HasPrefix(name, "-f") || strings.HasPrefix(name, "-p")) && !strings.HasPrefix(name, "--") {
			name, inline, hasInline = name[:2], a[2:], true
		}
		var err error
		var v string
		switch {
		case name == "-h" || name == "--help":
			ca.help = true
			return ca, nil
		case name == "-f" || name == "--file":
			if v, err = value(name, inline, hasInline); err == nil {
				ca.load.ConfigPaths = append(ca.load.ConfigPaths, v)
			}
		case name == "-p" || name == "--project-name":
			ca.load.ProjectName, err = value(name, inline, hasInline)
		case name == "--profile":
			if v, err = value(name, inline, hasInline); err == nil {
				ca.load.Profiles = append(ca.load.Profiles, v)
				ca.global = append(ca.global, "--profile", v)
			}
		case name == "--env-file":
			if v, err = value(name, inline, hasInline); err == nil {
				ca.load.EnvFiles = append(ca.load.EnvFiles, v)
				ca.global = append(ca.global, "--env-file", v)
			}
		case name == "--project-directory":
			if v, err = value(name, inline, hasInline); err == nil {
				ca.load.ProjectDir = v
				ca.global = append(ca.global, "--project-directory", v)
			}
		case name == "--timeout":
			if v, err = value(name, inline, hasInline); err == nil {
				if ca.timeout, err = time.ParseDuration(v); err == nil && ca.timeout <= 0 {
					err = errors.New("compose: --timeout must be positive")
				}
			}
		case slices.Contains(composeGlobalWithValue, name):
			if v, err = value(name, inline, hasInline); err == nil {
				ca.global = append(ca.global, name, v)
			}
		case slices.Contains(composeGlobalBool, name):
			ca.global = append(ca.global, a)
		default:
			return ca, fmt.Errorf("compose: unknown global flag %s (flags of a docker compose command go after the command)", a)
		}
		if err != nil {
			return ca, err
		}
	}
	if i >= len(args) {
		return ca, errors.New("compose: no command: use `teledock compose generate`, `up`, `down` or another docker compose command")
	}
	ca.command, ca.args = args[i], args[i+1:]
	if ca.command == "generate" {
		for j := 0; j < len(ca.args); j++ {
			switch a := ca.args[j]; {
			case a == "-o" || a == "--output":
				if j+1 >= len(ca.args) {
					return ca, errors.New("compose generate: -o needs a value")
				}
				ca.output = ca.args[j+1]
				j++
			case strings.HasPrefix(a, "-o=") || strings.HasPrefix(a, "--output="):
				_, ca.output, _ = strings.Cut(a, "=")
			case a == "-h" || a == "--help":
				ca.help = true
			default:
				return ca, fmt.Errorf("compose generate: unknown argument %q", a)
			}
		}
		if err := checkOutput(ca.output, "json"); err != nil {
			return ca, err
		}
	}
	return ca, nil
}
