// Command imprunctl is the command line of imprun-server for people who script the platform:
// log in, read clusters, agents, publishes, subscriptions and credentials, decide
// subscriptions, publish and withdraw with progress, and apply a declarative catalog file. It
// speaks only the REST API, through the client generated from http/openapi.yaml.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imprun/imprun-server/cmd/imprunctl/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Run(ctx, os.Args[1:], ctl.System())
	stop()
	os.Exit(code)
}
