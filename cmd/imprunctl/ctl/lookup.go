package ctl

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/client"
)

func (cl *api) clusters(ctx context.Context) ([]client.Cluster, error) {
	return listAll(func(cur *string) ([]client.Cluster, *string, error) {
		r, err := cl.ListClustersWithResponse(ctx, &client.ListClustersParams{Limit: &cl.limit, Cursor: cur})
		if err := check("list clusters", r, err); err != nil {
			return nil, nil, err
		}
		return r.JSON200.Items, r.JSON200.NextCursor, nil
	})
}

func (cl *api) clusterID(ctx context.Context, ref string) (uuid.UUID, error) {
	return resolveID("cluster", ref, func() ([]client.Cluster, error) { return cl.clusters(ctx) },
		func(c client.Cluster) string { return c.Name }, func(c client.Cluster) uuid.UUID { return c.Id })
}

// clusterIDForProvider resolves a cluster for a provider, who may not list clusters (an
// operator endpoint): an id is taken as it is, a name needs operator rights.
func (cl *api) clusterIDForProvider(ctx context.Context, ref string) (uuid.UUID, error) {
	id, err := cl.clusterID(ctx, ref)
	var ae *APIError
	if err != nil && asAPIError(err, &ae) && (ae.Status == 401 || ae.Status == 403) {
		return uuid.Nil, fmt.Errorf("cluster %q: name a cluster by its id (listing clusters by name needs the operator role)", ref)
	}
	return id, err
}

func (cl *api) agentID(ctx context.Context, ref string) (uuid.UUID, error) {
	return resolveID("agent", ref, func() ([]client.Agent, error) {
		return listAll(func(cur *string) ([]client.Agent, *string, error) {
			r, err := cl.ListAgentsWithResponse(ctx, &client.ListAgentsParams{Limit: &cl.limit, Cursor: cur})
			if err := check("list agents", r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
	}, func(a client.Agent) string { return a.Name }, func(a client.Agent) uuid.UUID { return a.Id })
}

func (cl *api) apps(ctx context.Context) ([]client.ClientApp, error) {
	return listAll(func(cur *string) ([]client.ClientApp, *string, error) {
		r, err := cl.ListClientAppsWithResponse(ctx, &client.ListClientAppsParams{Limit: &cl.limit, Cursor: cur})
		if err := check("list apps", r, err); err != nil {
			return nil, nil, err
		}
		return r.JSON200.Items, r.JSON200.NextCursor, nil
	})
}

func (cl *api) publish(ctx context.Context, id uuid.UUID) (*client.ProductPublishDetail, error) {
	r, err := cl.GetPublishWithResponse(ctx, id, nil)
	if err := check("get publish "+id.String(), r, err); err != nil {
		return nil, err
	}
	return r.JSON200, nil
}

// jsonFields is v as a JSON object.
func jsonFields(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func (cl *api) productID(ctx context.Context, ref string) (uuid.UUID, error) {
	return resolveID("product", ref, func() ([]client.Product, error) {
		return listAll(func(cur *string) ([]client.Product, *string, error) {
			r, err := cl.ListProductsWithResponse(ctx, &client.ListProductsParams{Limit: &cl.limit, Cursor: cur})
			if err := check("list products", r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
	}, func(p client.Product) string { return p.Name }, func(p client.Product) uuid.UUID { return p.Id })
}

func (cl *api) gatewayID(ctx context.Context, ref string) (uuid.UUID, error) {
	return resolveID("gateway", ref, func() ([]client.Gateway, error) {
		return listAll(func(cur *string) ([]client.Gateway, *string, error) {
			r, err := cl.ListGatewaysWithResponse(ctx, &client.ListGatewaysParams{Limit: &cl.limit, Cursor: cur})
			if err := check("list gateways", r, err); err != nil {
				return nil, nil, err
			}
			return r.JSON200.Items, r.JSON200.NextCursor, nil
		})
	}, func(g client.Gateway) string { return g.Name }, func(g client.Gateway) uuid.UUID { return g.Id })
}
