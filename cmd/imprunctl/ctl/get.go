package ctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/client"
)

// kinds maps every spelling of a resource kind to its canonical plural.
var kinds = map[string]string{
	"cluster": "clusters", "clusters": "clusters",
	"agent": "agents", "agents": "agents",
	"publish": "publishes", "publishes": "publishes", "product-publish": "publishes", "product-publishes": "publishes",
	"subscription": "subscriptions", "subscriptions": "subscriptions", "sub": "subscriptions", "subs": "subscriptions",
	"credential": "credentials", "credentials": "credentials", "cred": "credentials", "creds": "credentials",
}

func kindOf(arg string) (string, error) {
	if k, ok := kinds[strings.ToLower(arg)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q: want clusters, agents, publishes, subscriptions or credentials", arg)
}

// listFilters are the filters of `get`.
type listFilters struct {
	cluster, status, app, side string
}

func (a *app) getCmd() *cobra.Command {
	var f listFilters
	cmd := &cobra.Command{
		Use:   "get KIND [NAME|ID]",
		Short: "List clusters, agents, publishes, subscriptions or credentials (a table; -o json|yaml)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			kind, err := kindOf(args[0])
			if err != nil {
				return err
			}
			if len(args) == 2 {
				return a.describe(c.Context(), kind, args[1], f)
			}
			return a.list(c.Context(), kind, f)
		},
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "agents, publishes: only of this cluster (name or id)")
	cmd.Flags().StringVar(&f.status, "status", "", "only with this status")
	cmd.Flags().StringVar(&f.app, "app", "", "credentials: only of this client app (name or id; default every app)")
	cmd.Flags().StringVar(&f.side, "as", "", "subscriptions: provider or customer (default: the type of the current tenant)")
	return cmd
}

func (a *app) describeCmd() *cobra.Command {
	var f listFilters
	cmd := &cobra.Command{
		Use:   "describe KIND NAME|ID",
		Short: "One cluster, agent, publish (with the live wait state), subscription or credential in detail",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			kind, err := kindOf(args[0])
			if err != nil {
				return err
			}
			return a.describe(c.Context(), kind, args[1], f)
		},
	}
	cmd.Flags().StringVar(&f.side, "as", "", "subscriptions: provider or customer (default: the type of the current tenant)")
	return cmd
}

// kindCommands are what `get` and `describe` do for one kind: list them all (with the
// filters) or show one in detail.
type kindCommands struct {
	list     func(a *app, ctx context.Context, cl *api, f listFilters) error
	describe func(a *app, ctx context.Context, cl *api, ref string, f listFilters) error
}

var kindTable = map[string]kindCommands{
	"clusters":      {list: (*app).listClusters, describe: (*app).describeClusters},
	"agents":        {list: (*app).listAgents, describe: (*app).describeAgents},
	"publishes":     {list: (*app).listPublishes, describe: (*app).describePublishes},
	"subscriptions": {list: (*app).listSubscriptions, describe: (*app).describeSubscriptions},
	"credentials":   {list: (*app).listCredentials, describe: (*app).describeCredentials},
}

func (a *app) list(ctx context.Context, kind string, f listFilters) error {
	k, ok := kindTable[kind]
	if !ok {
		return fmt.Errorf("unknown kind %s", kind)
	}
	cl, err := a.api()
	if err != nil {
		return err
	}
	return k.list(a, ctx, cl, f)
}

func (a *app) describe(ctx context.Context, kind, ref string, f listFilters) error {
	k, ok := kindTable[kind]
	if !ok {
		return fmt.Errorf("unknown kind %s", kind)
	}
	cl, err := a.api()
	if err != nil {
		return err
	}
	return k.describe(a, ctx, cl, ref, f)
}

func (a *app) listClusters(ctx context.Context, cl *api, f listFilters) error {
	items, err := cl.clusters(ctx)
	if err != nil {
		return err
	}
	return a.emit(items, func(w io.Writer) error {
		t := &table{header: []string{"ID", "NAME", "REGION", "STATUS", "AGENTS", "CONNECTED", "LAST HEARTBEAT"}}
		for _, c := range items {
			t.add(c.Id.String(), c.Name, c.Region, string(c.Status), strconv.Itoa(c.AgentCount), strconv.Itoa(c.ConnectedAgents), ago(c.LastHeartbeatAt))
		}
		return t.write(w)
	})
}

func (a *app) listAgents(ctx context.Context, cl *api, f listFilters) error {
	p := &client.ListAgentsParams{}
	if f.cluster != "" {
		id, err := cl.clusterID(ctx, f.cluster)
		if err != nil {
			return err
		}
		p.ClusterId = &id
	}
	if f.status != "" {
		s := client.ListAgentsParamsStatus(f.status)
		p.Status = &s
	}
	items, err := listAll(func(cur *string) ([]client.Agent, *string, error) {
		p.Limit, p.Cursor = &cl.limit, cur
		r, err := cl.ListAgentsWithResponse(ctx, p)
		if err := check("list agents", r, err); err != nil {
			return nil, nil, err
		}
		return r.JSON200.Items, r.JSON200.NextCursor, nil
	})
	if err != nil {
		return err
	}
	return a.emit(items, func(w io.Writer) error {
		t := &table{header: []string{"ID", "NAME", "CLUSTER", "STATUS", "VERSION", "LAST HEARTBEAT"}}
		for _, ag := range items {
			t.add(ag.Id.String(), ag.Name, ag.ClusterId.String(), string(ag.Status), dash(ag.Version), ago(ag.LastHeartbeatAt))
		}
		return t.write(w)
	})
}

func (a *app) listPublishes(ctx context.Context, cl *api, f listFilters) error {
	p := &client.ListPublishesParams{}
	if f.cluster != "" {
		id, err := cl.clusterIDForProvider(ctx, f.cluster)
		if err != nil {
			return err
		}
		p.ClusterId = &id
	}
	if f.status != "" {
		s := client.ListPublishesParamsStatus(f.status)
		p.Status = &s
	}
	items, err := listAll(func(cur *string) ([]client.ProductPublish, *string, error) {
		p.Limit, p.Cursor = &cl.limit, cur
		r, err := cl.ListPublishesWithResponse(ctx, p)
		if err := check("list publishes", r, err); err != nil {
			return nil, nil, err
		}
		return r.JSON200.Items, r.JSON200.NextCursor, nil
	})
	if err != nil {
		return err
	}
	return a.emit(items, func(w io.Writer) error {
		t := &table{header: []string{"ID", "HOSTNAME", "ENV", "STATUS", "REVISION", "CLUSTER", "IN FLIGHT"}}
		for _, pb := range items {
			t.add(pb.Id.String(), pb.Hostname, string(pb.Environment), string(pb.Status), strconv.Itoa(pb.CurrentRevision), pb.ClusterId.String(), str(pb.WorkflowId))
		}
		return t.write(w)
	})
}

func (a *app) listSubscriptions(ctx context.Context, cl *api, f listFilters) error {
	side, err := a.side(ctx, cl, f.side)
	if err != nil {
		return err
	}
	var items []client.Subscription
	if side == "customer" {
		p := &client.ListCustomerSubscriptionsParams{}
		if f.status != "" {
			s := client.ListCustomerSubscriptionsParamsStatus(f.status)
			p.Status = &s
		}
		items, err = listAll(func(cur *string) ([]client.Subscription, *string, error) {
			p.Limit, p.Cursor = &cl.limit, cur
			r, err := cl.ListCustomerSubscriptionsWithResponse(ctx, p)
			if err := check("list subscriptions", r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
	} else {
		p := &client.ListProviderSubscriptionsParams{}
		if f.status != "" {
			s := client.ListProviderSubscriptionsParamsStatus(f.status)
			p.Status = &s
		}
		items, err = listAll(func(cur *string) ([]client.Subscription, *string, error) {
			p.Limit, p.Cursor = &cl.limit, cur
			r, err := cl.ListProviderSubscriptionsWithResponse(ctx, p)
			if err := check("list subscriptions", r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
	}
	if err != nil {
		return err
	}
	return a.emit(items, func(w io.Writer) error {
		t := &table{header: []string{"ID", "STATUS", "PUBLISH", "APP", "PLAN", "CREATED BY", "APPROVAL DEADLINE"}}
		for _, s := range items {
			plan := "-"
			if s.PlanId != nil {
				plan = s.PlanId.String()
			}
			t.add(s.Id.String(), string(s.Status), s.ProductPublishId.String(), s.ClientAppId.String(), plan, dash(s.CreatedBy), ts(s.ApprovalDeadline))
		}
		return t.write(w)
	})
}

func (a *app) listCredentials(ctx context.Context, cl *api, f listFilters) error {
	apps, err := cl.apps(ctx)
	if err != nil {
		return err
	}
	var items []client.Credential
	for _, app := range apps {
		if f.app != "" && f.app != app.Name && f.app != app.Id.String() {
			continue
		}
		creds, err := listAll(func(cur *string) ([]client.Credential, *string, error) {
			r, err := cl.ListCredentialsWithResponse(ctx, app.Id, &client.ListCredentialsParams{Limit: &cl.limit, Cursor: cur})
			if err := check("list credentials of app "+app.Name, r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
		if err != nil {
			return err
		}
		for _, c := range creds {
			if f.status == "" || string(c.Status) == f.status {
				items = append(items, c)
			}
		}
	}
	return a.emit(items, func(w io.Writer) error {
		t := &table{header: []string{"ID", "TYPE", "PREFIX", "LABEL", "STATUS", "VERSION", "EXPIRES", "LAST USED"}}
		for _, c := range items {
			t.add(c.Id.String(), string(c.Type), c.KeyPrefix, dash(c.Label), string(c.Status), strconv.Itoa(c.Version), ts(c.ExpiresAt), ago(c.LastUsedAt))
		}
		return t.write(w)
	})
}

func (a *app) describeClusters(ctx context.Context, cl *api, ref string, f listFilters) error {
	id, err := cl.clusterID(ctx, ref)
	if err != nil {
		return err
	}
	r, err := cl.GetClusterWithResponse(ctx, id)
	if err := check("get cluster", r, err); err != nil {
		return err
	}
	c := r.JSON200
	return a.emit(c, func(w io.Writer) error {
		var classes []string
		for _, gc := range c.Capabilities.GatewayClasses {
			classes = append(classes, string(gc.Name))
		}
		fields(w, "id", c.Id.String(), "name", c.Name, "region", c.Region, "status", string(c.Status),
			"description", dash(c.Description), "gateway classes", dash(strings.Join(classes, ", ")),
			"egress allow", dash(strings.Join(append(c.EgressAllow.Cidrs, c.EgressAllow.NameSuffixes...), ", ")),
			"agents", fmt.Sprintf("%d (%d connected)", c.AgentCount, c.ConnectedAgents),
			"last heartbeat", ts(c.LastHeartbeatAt), "created", ts(&c.CreatedAt))
		return nil
	})
}

func (a *app) describeAgents(ctx context.Context, cl *api, ref string, f listFilters) error {
	id, err := cl.agentID(ctx, ref)
	if err != nil {
		return err
	}
	r, err := cl.GetAgentWithResponse(ctx, id)
	if err := check("get agent", r, err); err != nil {
		return err
	}
	d := r.JSON200
	return a.emit(d, func(w io.Writer) error {
		fields(w, "id", d.Id.String(), "name", d.Name, "cluster", d.ClusterName+" ("+d.ClusterId.String()+")",
			"status", string(d.Status), "version", dash(d.Version), "hostname", dash(d.Hostname), "ip", dash(d.IpAddress),
			"last connected", ts(d.LastConnectedAt), "last heartbeat", ts(d.LastHeartbeatAt), "revoked", ts(d.RevokedAt))
		if len(d.Applied) > 0 {
			fmt.Fprintln(w, "\napplied:")
			t := &table{header: []string{"PUBLISH", "REVISION", "CHECKSUM"}}
			for _, ap := range d.Applied {
				b, _ := jsonFields(ap)
				t.add(fmt.Sprint(b["publish_id"]), fmt.Sprint(b["revision"]), fmt.Sprint(b["checksum"]))
			}
			_ = t.write(w)
		}
		if len(d.RecentEvents) > 0 {
			fmt.Fprintln(w, "\nrecent events:")
			t := &table{header: []string{"AT", "TYPE", "MESSAGE"}}
			for _, e := range d.RecentEvents {
				b, _ := jsonFields(e)
				t.add(fmt.Sprint(b["created_at"]), fmt.Sprint(b["type"]), fmt.Sprint(b["message"]))
			}
			_ = t.write(w)
		}
		return nil
	})
}

func (a *app) describePublishes(ctx context.Context, cl *api, ref string, f listFilters) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return fmt.Errorf("a publish is named by its id")
	}
	d, err := cl.publish(ctx, id)
	if err != nil {
		return err
	}
	return a.emit(d, func(w io.Writer) error { describePublish(w, d); return nil })
}

func (a *app) describeSubscriptions(ctx context.Context, cl *api, ref string, f listFilters) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return fmt.Errorf("a subscription is named by its id")
	}
	side, err := a.side(ctx, cl, f.side)
	if err != nil {
		return err
	}
	var s *client.Subscription
	if side == "customer" {
		r, err := cl.GetCustomerSubscriptionWithResponse(ctx, id, nil)
		if err := check("get subscription", r, err); err != nil {
			return err
		}
		s = r.JSON200
	} else {
		r, err := cl.GetProviderSubscriptionWithResponse(ctx, id, nil)
		if err := check("get subscription", r, err); err != nil {
			return err
		}
		s = r.JSON200
	}
	return a.emit(s, func(w io.Writer) error {
		plan := "-"
		if s.PlanId != nil {
			plan = s.PlanId.String()
		}
		fields(w, "id", s.Id.String(), "status", string(s.Status), "publish", s.ProductPublishId.String(),
			"app", s.ClientAppId.String(), "plan", plan, "customer tenant", s.CustomerTenantId.String(),
			"approval required", strconv.FormatBool(s.ApprovalRequired), "approval deadline", ts(s.ApprovalDeadline),
			"decided by", dash(s.DecidedBy), "decided at", ts(s.DecidedAt), "reason", dash(s.Reason),
			"created by", dash(s.CreatedBy), "created", ts(&s.CreatedAt), "started", ts(s.StartedAt), "ended", ts(s.EndedAt))
		return nil
	})
}

func (a *app) describeCredentials(ctx context.Context, cl *api, ref string, f listFilters) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return fmt.Errorf("a credential is named by its id")
	}
	r, err := cl.GetCredentialWithResponse(ctx, id, nil)
	if err := check("get credential", r, err); err != nil {
		return err
	}
	d := r.JSON200
	return a.emit(d, func(w io.Writer) error {
		fields(w, "id", d.Id.String(), "type", string(d.Type), "prefix", d.KeyPrefix, "label", dash(d.Label),
			"status", string(d.Status), "version", strconv.Itoa(d.Version), "app", d.ClientAppId.String(),
			"expires", ts(d.ExpiresAt), "last used", ts(d.LastUsedAt), "revoked", ts(d.RevokedAt),
			"revocation confirmed", strconv.FormatBool(d.RevocationConfirmed))
		if len(d.Rollout) > 0 {
			fmt.Fprintln(w, "\nrollout:")
			t := &table{header: []string{"CLUSTER", "ACTION", "VERSION", "STATUS", "CONFIRMED", "PENDING SINCE", "AGENTS OFFLINE"}}
			for _, ro := range d.Rollout {
				t.add(ro.ClusterName, string(ro.Action), strconv.Itoa(ro.Version), string(ro.Status), ts(ro.ConfirmedAt), ts(ro.PendingSince), strconv.FormatBool(ro.AgentsOffline))
			}
			_ = t.write(w)
		}
		return nil
	})
}

func describePublish(w io.Writer, d *client.ProductPublishDetail) {
	fields(w, "id", d.Id.String(), "hostname", d.Hostname, "environment", string(d.Environment),
		"status", string(d.Status), "reason", dash(d.StatusReason), "revision", strconv.Itoa(d.CurrentRevision),
		"product", d.ProductId.String(), "cluster", d.ClusterId.String(), "gateway", d.GatewayId.String(),
		"auth mode", string(d.AuthMode), "visibility", string(d.Visibility),
		"approval required", strconv.FormatBool(d.ApprovalRequired), "in flight", str(d.WorkflowId),
		"published", ts(d.PublishedAt))
	if ws := d.WaitState; ws != nil {
		fmt.Fprintln(w, "\nwait state:")
		fmt.Fprintf(w, "  %s\n", waitLine(d))
	}
	if len(d.Results) > 0 {
		fmt.Fprintln(w, "\nresults:")
		t := &table{header: []string{"AGENT", "ACTION", "REVISION", "DELIVERY", "STATUS", "MESSAGE"}}
		for _, r := range d.Results {
			t.add(dash(r.AgentName), string(r.Action), strconv.Itoa(r.Revision), string(r.Delivery), dash(r.Status), dash(r.Message))
		}
		_ = t.write(w)
	}
	if len(d.Timeline) > 0 {
		fmt.Fprintln(w, "\ntimeline:")
		t := &table{header: []string{"AT", "REVISION", "TYPE", "MESSAGE"}}
		for _, e := range d.Timeline {
			t.add(ts(&e.At), strconv.Itoa(e.Revision), e.Type, dash(e.Message))
		}
		_ = t.write(w)
	}
}

// side is whether subscriptions are read as the provider or as the customer.
func (a *app) side(ctx context.Context, cl *api, flag string) (string, error) {
	switch flag {
	case "provider", "customer":
		return flag, nil
	case "":
	default:
		return "", fmt.Errorf("--as %q: want provider or customer", flag)
	}
	r, err := cl.GetMeWithResponse(ctx)
	if err := check("GET /v1/me", r, err); err != nil {
		return "", err
	}
	s, _ := a.settings()
	types := map[string]bool{}
	for _, t := range r.JSON200.Tenants {
		if s.Tenant == "" || t.Slug == s.Tenant {
			types[string(t.Type)] = true
		}
	}
	if types["customer"] && !types["provider"] {
		return "customer", nil
	}
	return "provider", nil
}
