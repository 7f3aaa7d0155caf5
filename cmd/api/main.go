// Command api is the imprun-server API process: the REST API, the agent gRPC gateway and the
// operator tools (schema migrations, legacy remapping, dev tokens).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/config"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	var cfgPath string
	root := &cobra.Command{
		Use:           "api",
		Short:         "imprun-server control plane API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&cfgPath, "config", os.Getenv(config.ConfigFileEnv), "YAML configuration file (also "+config.ConfigFileEnv+")")
	load := func() (*config.Config, error) { return config.Load(cfgPath) }
	root.AddCommand(serveCmd(load), migrateCmd(load))
	for _, add := range extraCommands {
		root.AddCommand(add(load))
	}
	return root
}

// extraCommands lets other files of this package add subcommands without editing rootCmd.
var extraCommands []func(load func() (*config.Config, error)) *cobra.Command
