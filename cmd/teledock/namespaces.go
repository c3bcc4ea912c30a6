package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spf13/cobra"

	"teledock.dev/teledock/daemoncontainer/launcher"
)

type namespacesOptions struct {
	kubeconfig string
	context    string
	output     string
}

func newNamespacesCmd(d deps) *cobra.Command {
	var opts namespacesOptions
	cmd := &cobra.Command{
		Use:   "namespaces",
		Short: "List the cluster's namespaces (what connect -n takes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(opts.output, "json"); err != nil {
				return err
			}
			names, err := listNamespaces(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				return writeJSON(d.stdout, struct {
					SchemaVersion int      `json:"schemaVersion"`
					Namespaces    []string `json:"namespaces"`
				}{schemaVersion, names})
			}
			_, err = fmt.Fprintln(d.stdout, strings.Join(names, "\n"))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&opts.context, "context", "", "kubeconfig context (default: the current one)")
	f.StringVarP(&opts.output, "output", "o", "", "output format: json")
	return cmd
}

// userRESTConfig is the user's own kubeconfig (kubectl's rules and flags), for calls made from
// this machine rather than from the daemon container.
func userRESTConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("%w: %w", launcher.ErrInvalidKubeconfig, err)
		}
		rules.ExplicitPath = kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", launcher.ErrInvalidKubeconfig, err)
	}
	rc.Timeout = 15 * time.Second
	return rc, nil
}

// listNamespaces asks the API server from this machine, with the user's own kubeconfig.
func listNamespaces(ctx context.Context, opts namespacesOptions) ([]string, error) {
	rc, err := userRESTConfig(opts.kubeconfig, opts.context)
	if err != nil {
		return nil, err
	}
	k8s, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", launcher.ErrInvalidKubeconfig, err)
	}
	list, err := k8s.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("list namespaces: %w: %w", errClusterAuth, err)
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	return names, nil
}
