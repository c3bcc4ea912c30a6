package main

import "github.com/spf13/cobra"

func newRootCmd(d deps) *cobra.Command {
	root := &cobra.Command{
		Use:           "teledock",
		Short:         "Run one service of a Kubernetes application in a local Docker container",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(d.stdout)
	root.SetErr(d.stderr)
	root.AddCommand(
		newVersionCmd(d),
		newConnectCmd(d),
		newStatusCmd(d),
		newQuitCmd(d),
		newRunCmd(d),
		newInterceptCmd(d),
		newListCmd(d),
		newLeaveCmd(d),
		newInstallCmd(d),
		newUninstallCmd(d),
		newComposeCmd(d),
		newContextsCmd(d),
		newNamespacesCmd(d),
		newEnvCmd(d),
		newGatherLogsCmd(d),
	)
	markUsageErrors(root)
	return root
}
