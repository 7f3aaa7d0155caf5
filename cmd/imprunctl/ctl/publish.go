package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/client"
)

// follow says how publish and withdraw wait for the workflow's outcome.
type follow struct {
	noWait  bool
	timeout time.Duration
	poll    time.Duration
}

func (f *follow) flags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "return once the workflow started, without following it")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 0, "stop following after this long (exit 1; the workflow goes on); 0 waits for the outcome")
	cmd.Flags().DurationVar(&f.poll, "poll", 500*time.Millisecond, "how often to read the publish while following")
}

func (a *app) publishCmd() *cobra.Command {
	var fl follow
	var product, cluster, gateway, hostname, env, authMode, visibility string
	var approval bool
	var deadline time.Duration
	cmd := &cobra.Command{
		Use:   "publish [PUBLISH_ID]",
		Short: "Publish (a new revision of) a publish, or create one with --product/--cluster/--gateway/--hostname, and follow it until PUBLISHED or FAILED",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			cl, err := a.api()
			if err != nil {
				return err
			}
			var id uuid.UUID
			if len(args) == 1 {
				if id, err = uuid.Parse(args[0]); err != nil {
					return fmt.Errorf("a publish is named by its id")
				}
				r, err := cl.PublishPublishWithResponse(ctx, id, nil)
				if err := check("publish "+id.String(), r, err); err != nil {
					return err
				}
			} else {
				if product == "" || cluster == "" || gateway == "" || hostname == "" {
					return fmt.Errorf("name a publish id, or give --product, --cluster, --gateway and --hostname to create one")
				}
				body := client.PublishCreate{Hostname: hostname, Environment: client.PublishCreateEnvironment(env)}
				if body.ProductId, err = cl.productID(ctx, product); err != nil {
					return err
				}
				if body.ClusterId, err = cl.clusterIDForProvider(ctx, cluster); err != nil {
					return err
				}
				if body.GatewayId, err = cl.gatewayID(ctx, gateway); err != nil {
					return err
				}
				if authMode != "" {
					m := client.PublishCreateAuthMode(authMode)
					body.AuthMode = &m
				}
				if visibility != "" {
					v := client.PublishCreateVisibility(visibility)
					body.Visibility = &v
				}
				if c.Flags().Changed("approval-required") {
					body.ApprovalRequired = &approval
				}
				if deadline > 0 {
					secs := int(deadline / time.Second)
					body.DeadlineSeconds = &secs
				}
				r, err := cl.CreatePublishWithResponse(ctx, nil, body)
				if err := check("create publish", r, err); err != nil {
					return err
				}
				id = r.JSON201.Id
				fmt.Fprintf(a.io.Stderr, "publish %s created\n", id)
			}
			return a.follow(ctx, cl, id, fl, "PUBLISHED")
		},
	}
	f := cmd.Flags()
	f.StringVar(&product, "product", "", "product (name or id) of a new publish")
	f.StringVar(&cluster, "cluster", "", "cluster id (a name needs the operator role) of a new publish")
	f.StringVar(&gateway, "gateway", "", "gateway template (name or id) of a new publish")
	f.StringVar(&hostname, "hostname", "", "hostname of a new publish")
	f.StringVar(&env, "environment", "prod", "environment of a new publish: dev, stage or prod")
	f.StringVar(&authMode, "auth-mode", "", "none, api-key or oauth2 (default: the API's)")
	f.StringVar(&visibility, "visibility", "", "public or private (default: the API's)")
	f.BoolVar(&approval, "approval-required", false, "subscriptions need the provider's approval")
	f.DurationVar(&deadline, "deadline", 0, "how long a deploy of a new publish waits for an agent before it is FAILED (default: the API's, 24 h)")
	fl.flags(cmd)
	return cmd
}

func (a *app) withdrawCmd() *cobra.Command {
	var fl follow
	var reason string
	cmd := &cobra.Command{
		Use:   "withdraw PUBLISH_ID",
		Short: "Withdraw a publish from its cluster and follow it until WITHDRAWN or FAILED",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := uuid.Parse(args[0])
			if err != nil {
				return fmt.Errorf("a publish is named by its id")
			}
			cl, err := a.api()
			if err != nil {
				return err
			}
			r, err := cl.WithdrawPublishWithResponse(c.Context(), id, nil, client.WithdrawPublishJSONRequestBody{Reason: reason})
			if err := check("withdraw "+id.String(), r, err); err != nil {
				return err
			}
			return a.follow(c.Context(), cl, id, fl, "WITHDRAWN")
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept on the publish and in the audit log)")
	fl.flags(cmd)
	return cmd
}

var spinner = []string{"|", "/", "-", "\\"}

// follow reads the publish until its run is over, drawing what the workflow waits for (which
// agents of the cluster are offline), and fails unless it ends in want.
func (a *app) follow(ctx context.Context, cl *api, id uuid.UUID, fl follow, want string) error {
	if fl.noWait {
		d, err := cl.publish(ctx, id)
		if err != nil {
			return err
		}
		return a.emit(d, func(w io.Writer) error { describePublish(w, d); return nil })
	}
	if fl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fl.timeout)
		defer cancel()
	}
	if fl.poll <= 0 {
		fl.poll = 500 * time.Millisecond
	}
	errw := a.io.Stderr
	last, frame := "", 0
	tick := time.NewTicker(fl.poll)
	defer tick.Stop()
	for {
		d, err := cl.publish(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		if d.WorkflowId == nil && isOutcome(string(d.Status)) {
			if a.io.Interactive && last != "" {
				fmt.Fprint(errw, "\r\033[K")
			}
			if a.output != "table" {
				if err := a.emit(d, nil); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.io.Stdout, "publish %s: %s (revision %d)%s\n", id, d.Status, d.CurrentRevision, reasonSuffix(d.StatusReason))
			}
			if string(d.Status) != want {
				return &exitError{code: ExitError, msg: fmt.Sprintf("publish %s ended %s, not %s%s", id, d.Status, want, reasonSuffix(d.StatusReason))}
			}
			return nil
		}
		line := waitLine(d)
		if a.io.Interactive {
			fmt.Fprintf(errw, "\r\033[K%s %s", spinner[frame%len(spinner)], line)
			frame++
		} else if line != last {
			fmt.Fprintln(errw, line)
		}
		last = line
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	if a.io.Interactive {
		fmt.Fprintln(errw)
	}
	return &exitError{code: ExitError, msg: fmt.Sprintf("stopped following publish %s (%v); the workflow goes on: imprunctl describe publish %s", id, ctx.Err(), id)}
}

func isOutcome(status string) bool {
	switch status {
	case "PUBLISHED", "FAILED", "WITHDRAWN", "DRAFT":
		return true
	}
	return false
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

// waitLine says in one line what the run in flight waits for.
func waitLine(d *client.ProductPublishDetail) string {
	head := fmt.Sprintf("%s revision %d", d.Status, d.CurrentRevision)
	ws := d.WaitState
	if ws == nil {
		return head
	}
	if ws.Phase != nil {
		head += " (" + string(*ws.Phase) + ")"
	}
	p := ws.Presence
	if p == nil || ws.Phase == nil || *ws.Phase != client.WaitingForResult {
		return head // agents matter only while the run waits for their result
	}
	cluster := str(p.ClusterName)
	var online int
	var offline []string
	if p.Agents != nil {
		for _, ag := range *p.Agents {
			if ag.Status != nil && *ag.Status == "connected" {
				online++
				continue
			}
			name := str(ag.Name)
			if ag.OfflineSince != nil {
				name += " offline since " + ts(ag.OfflineSince)
			} else if ag.Status != nil {
				name += " " + *ag.Status
			}
			offline = append(offline, name)
		}
	}
	switch {
	case p.Agents == nil || len(*p.Agents) == 0:
		return fmt.Sprintf("%s: waiting for an agent of cluster %s (none registered)", head, cluster)
	case online == 0:
		return fmt.Sprintf("%s: waiting for an agent of cluster %s; offline: %s", head, cluster, strings.Join(offline, ", "))
	case len(offline) > 0:
		return fmt.Sprintf("%s: %d agent(s) of cluster %s online; offline: %s", head, online, cluster, strings.Join(offline, ", "))
	}
	return fmt.Sprintf("%s: %d agent(s) of cluster %s online", head, online, cluster)
}

func (a *app) decideCmd(decision string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   decision + " [subscription] ID",
		Short: strings.ToUpper(decision[:1]) + decision[1:] + " a pending subscription (provider)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 2 {
				if k, _ := kindOf(args[0]); k != "subscriptions" {
					return fmt.Errorf("%s decides subscriptions only", decision)
				}
				args = args[1:]
			}
			id, err := uuid.Parse(args[0])
			if err != nil {
				return fmt.Errorf("a subscription is named by its id")
			}
			cl, err := a.api()
			if err != nil {
				return err
			}
			var rp *string
			if reason != "" {
				rp = &reason
			}
			var s *client.Subscription
			if decision == "approve" {
				r, err := cl.ApproveSubscriptionWithResponse(c.Context(), id, nil, client.ApproveSubscriptionJSONRequestBody{Reason: rp})
				if err := check("approve subscription", r, err); err != nil {
					return err
				}
				s = r.JSON200
				if s == nil {
					s = r.JSON202
				}
			} else {
				r, err := cl.RejectSubscriptionWithResponse(c.Context(), id, nil, client.RejectSubscriptionJSONRequestBody{Reason: rp})
				if err := check("reject subscription", r, err); err != nil {
					return err
				}
				s = r.JSON200
				if s == nil {
					s = r.JSON202
				}
			}
			return a.emit(s, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "subscription %s: %s\n", s.Id, s.Status)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the decision)")
	return cmd
}
