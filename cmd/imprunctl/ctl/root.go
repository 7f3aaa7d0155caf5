// Package ctl is imprunctl: every command, built on the generated REST client (package client)
// only. Run is the whole program, so tests drive it in-process with their own environment,
// configuration directory and output.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes, for scripts and CI.
const (
	ExitOK      = 0
	ExitError   = 1
	ExitChanges = 2 // diff (and apply --dry-run): changes are pending
)

// IO is what the program reads and writes besides the network.
type IO struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Interactive draws spinners (a terminal); otherwise progress is one line per change.
	Interactive bool
}

// System is the IO of the real process.
func System() IO {
	interactive := false
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		interactive = true
	}
	return IO{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Interactive: interactive}
}

// exitError carries an exit code other than ExitError through cobra.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// app is one invocation: the global flags and what they resolve to.
type app struct {
	io       IO
	server   string
	token    string
	tenant   string
	output   string
	config   string
	pageSize int
}

// Run executes imprunctl with args and returns the process exit code.
func Run(ctx context.Context, args []string, sio IO) int {
	a := &app{io: sio}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(sio.Stdout)
	root.SetErr(sio.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(sio.Stderr, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(sio.Stderr, "error:", err)
	return ExitError
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "imprunctl",
		Short:         "Script imprun-server through its REST API",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			switch a.output {
			case "table", "json", "yaml":
				return nil
			}
			return fmt.Errorf("-o %q: want table, json or yaml", a.output)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", "", "API base URL (env IMPRUN_SERVER; default from login, else http://127.0.0.1:8080)")
	f.StringVar(&a.token, "token", "", "bearer token (env IMPRUN_TOKEN; default from login)")
	f.StringVar(&a.tenant, "tenant", "", "tenant slug sent as X-Tenant (env IMPRUN_TENANT; default from login)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&a.config, "config", "", "config file (default $XDG_CONFIG_HOME/imprunctl/config.yaml)")
	f.IntVar(&a.pageSize, "page-size", maxPage, "items per list request (lists are always read whole, following next_cursor)")
	_ = f.MarkHidden("page-size")
	root.AddCommand(a.loginCmd(), a.logoutCmd(), a.whoamiCmd(), a.getCmd(), a.describeCmd(),
		a.decideCmd("approve"), a.decideCmd("reject"), a.publishCmd(), a.withdrawCmd(),
		a.applyCmd(), a.diffCmd())
	return root
}
