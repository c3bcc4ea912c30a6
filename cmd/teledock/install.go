package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/internal/images"
	"teledock.dev/teledock/internal/version"
)

type installOptions struct {
	kubeconfig       string
	context          string
	managerNamespace string
	image            string
	agentImage       string
	registry         string
	// imageGiven and agentImageGiven: the flag was set, and the image is used as given.
	imageGiven      bool
	agentImageGiven bool
	direct          bool
	timeout         time.Duration
}

func newInstallCmd(d deps) *cobra.Command {
	var opts installOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade the traffic-manager in the cluster",
		Long: "Install or upgrade the traffic-manager (a Helm release of the chart built into teledock).\n\n" +
			"Install is idempotent: running it again upgrades the release to this version and these settings.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.imageGiven, opts.agentImageGiven = cmd.Flags().Changed("image"), cmd.Flags().Changed("agent-image")
			return runInstall(cmd.Context(), d, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&opts.context, "context", "", "kubeconfig context (default: the current one)")
	f.StringVar(&opts.managerNamespace, "manager-namespace", "teledock", "namespace of the traffic-manager")
	f.StringVar(&opts.image, "image", images.TrafficManager.Ref(version.Version), "traffic-manager image")
	f.StringVar(&opts.agentImage, "agent-image", images.TrafficAgent.Ref(version.Version), "traffic-agent image the manager injects")
	f.StringVar(&opts.registry, "registry", "", "push the traffic-manager and traffic-agent images to this registry (e.g. ghcr.io/me) with your Docker\n"+
		"credentials and install with its references (default: load them into a local cluster's nodes, or push to\n"+
		"the registry the cluster advertises in kube-public/local-registry-hosting)")
	f.BoolVar(&opts.direct, "direct", false, "also expose the manager's tunnels on a TLS NodePort, for connect --transport auto|direct\n"+
		"(opens a port on every node; only clients that may port-forward to the manager get a token for it)")
	f.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "how long to wait for the traffic-manager to be ready")
	return cmd
}

func runInstall(ctx context.Context, d deps, opts installOptions) error {
	repo, tag, err := splitImage(opts.image)
	if err != nil {
		return err
	}
	agentRepo, agentTag, err := splitImage(opts.agentImage)
	if err != nil {
		return err
	}
	cfg := install.Config{
		Kubeconfig: opts.kubeconfig,
		Context:    opts.context,
		Namespace:  opts.managerNamespace,
		Version:    version.Version,
		Values: map[string]any{
			"image":      map[string]any{"repository": repo, "tag": tag},
			"agentImage": map[string]any{"repository": agentRepo, "tag": agentTag},
			// Always set, so that installing again without --direct turns it off.
			"direct": map[string]any{"enabled": opts.direct},
		},
		Timeout: opts.timeout,
		Events:  installProgress(d.stderr),
		Log:     d.log,
	}
	var wanted []images.Spec
	if !opts.imageGiven {
		wanted = append(wanted, images.TrafficManager)
	}
	if !opts.agentImageGiven {
		wanted = append(wanted, images.TrafficAgent)
	}
	if opts.registry != "" && len(wanted) == 0 {
		return fmt.Errorf("%w: --registry pushes teledock's own images, and --image and --agent-image replace both", errUsage)
	}
	host, err := clusterImages(ctx, d, cfg, wanted, strings.TrimSuffix(opts.registry, "/"))
	if err != nil {
		return err
	}
	if host != "" {
		// The pushed images are the defaults under the registry's name.
		if !opts.imageGiven {
			opts.image = host + "/" + opts.image
			cfg.Values["image"] = map[string]any{"repository": host + "/" + repo, "tag": tag}
		}
		if !opts.agentImageGiven {
			cfg.Values["agentImage"] = map[string]any{"repository": host + "/" + agentRepo, "tag": agentTag}
		}
	}
	if err := install.Install(ctx, cfg); err != nil {
		return fmt.Errorf("install the traffic-manager in namespace %s: %w", opts.managerNamespace, err)
	}
	fmt.Fprintf(d.stdout, "Traffic Manager installed in namespace %s (%s)\n", opts.managerNamespace, opts.image)
	if opts.direct {
		fmt.Fprintf(d.stdout, "Direct transport: NodePort Service traffic-manager-direct in namespace %s\n", opts.managerNamespace)
	}
	return nil
}

// splitImage splits "repo:tag" (the repository may contain a registry port).
func splitImage(ref string) (repo, tag string, err error) {
	i := strings.LastIndex(ref, ":")
	if i <= 0 || strings.Contains(ref[i:], "/") || i == len(ref)-1 {
		return "", "", fmt.Errorf("image %q has no tag: %w", ref, errBadImage)
	}
	return ref[:i], ref[i+1:], nil
}

// installProgress renders install and uninstall events as lines on w.
func installProgress(w io.Writer) install.EventFunc {
	return func(e install.Event) {
		switch e.Kind {
		case install.EventNamespaceCreated:
			fmt.Fprintf(w, "Created namespace %s\n", e.Namespace)
		case install.EventInstalling:
			fmt.Fprintf(w, "Installing %s in %s\n", e.Release, e.Namespace)
		case install.EventUpgrading:
			fmt.Fprintf(w, "Upgrading %s in %s\n", e.Release, e.Namespace)
		case install.EventWaiting:
			line := fmt.Sprintf("Waiting for the traffic-manager: %d/%d ready", e.Ready, e.Desired)
			if e.Reason != "" {
				line += " (" + e.Reason + ")"
			}
			fmt.Fprintln(w, line)
		case install.EventUninstalling:
			fmt.Fprintf(w, "Uninstalling %s from %s\n", e.Release, e.Namespace)
		case install.EventNamespaceDeleted:
			fmt.Fprintf(w, "Deleted namespace %s\n", e.Namespace)
		}
	}
}
