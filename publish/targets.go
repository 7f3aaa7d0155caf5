package publish

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// targets checks what a publish points at: its product (active, and the services are its
// own), its gateway template, its cluster (it lists the template's gateway class, its egress
// policy allows every backend, it is not in maintenance) and, for a request, its hostname.
// Another tenant's row is the same failure as a row that does not exist.
type targets struct {
	st      *store.Store
	v       fault.Validator
	product *models.Product
	gateway *models.Gateway
}

// ValidateTargets checks every target of p as it is now; the activity that freezes a
// revision calls it, since the world may have changed since the publish was accepted. The
// hostnames are not checked here: freezing claims every hostname the snapshot serves. It
// returns the product and template it read, for the snapshot built in the same transaction.
func ValidateTargets(ctx context.Context, st *store.Store, p models.ProductPublish) (store.SnapshotSource, error) {
	t := &targets{st: st}
	if err := t.loadProduct(ctx, p.TenantID, p.ProductID); err != nil {
		return store.SnapshotSource{}, err
	}
	if err := t.checkServices(ctx, p); err != nil {
		return store.SnapshotSource{}, err
	}
	if err := t.loadGateway(ctx, p.TenantID, p.GatewayID, true); err != nil {
		return store.SnapshotSource{}, err
	}
	if err := t.checkCluster(ctx, &p, false); err != nil {
		return store.SnapshotSource{}, err
	}
	return store.SnapshotSource{Product: t.product, Gateway: t.gateway}, nil
}

// Reason is the sentence for a publish that breaks a rule (ok), for a run's failure reason.
func Reason(err error) (string, bool) {
	f, ok := fault.As(err)
	if !ok || f.Kind == fault.Unavailable {
		return "", false
	}
	if len(f.Fields) == 0 {
		return f.Detail, true
	}
	parts := make([]string, len(f.Fields))
	for i, fe := range f.Fields {
		parts[i] = fe.Field + ": " + fe.Message
	}
	return strings.Join(parts, "; "), true
}

// checkRequest checks the targets of a create or edit: each reference the change touches
// (all on create), and the services on every change, writing the product's services into p
// when the change names a product but no services.
func checkRequest(ctx context.Context, st *store.Store, ch Changes, p *models.ProductPublish, t0 touched, create bool) error {
	t := &targets{st: st}
	if t0.product || create {
		if err := t.loadProduct(ctx, p.TenantID, p.ProductID); err != nil {
			return err
		}
		if t.product != nil && ch.APIServices == nil {
			p.APIServiceIDs = models.UUIDArray(t.product.APIServices)
		}
	}
	if ch.APIServices != nil {
		p.APIServiceIDs = parseServices(*ch.APIServices, &t.v)
	}
	if err := t.checkServices(ctx, *p); err != nil {
		return err
	}
	if t0.gateway || create {
		if err := t.loadGateway(ctx, p.TenantID, p.GatewayID, true); err != nil {
			return err
		}
	}
	if t0.cluster || create {
		if t.gateway == nil && !(t0.gateway || create) {
			if err := t.loadGateway(ctx, p.TenantID, p.GatewayID, false); err != nil {
				return err
			}
		}
		if err := t.checkCluster(ctx, p, true); err != nil {
			return err
		}
	}
	return t.v.Err()
}

func (t *targets) loadProduct(ctx context.Context, tenantID, id uuid.UUID) error {
	prod, err := t.st.GetProduct(ctx, tenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		t.v.Add("product_id", "no such product")
		return nil
	}
	if err != nil {
		return err
	}
	if prod.Status != models.ProductActive {
		t.v.Add("product_id", "the product must be active (it is "+prod.Status+")")
	}
	t.product = &prod
	return nil
}

// checkServices: at least one service, each one of the product's. Without a readable product
// there is nothing to compare with (its own failure says why).
func (t *targets) checkServices(ctx context.Context, p models.ProductPublish) error {
	prod := t.product
	if prod == nil {
		got, err := t.st.GetProduct(ctx, p.TenantID, p.ProductID)
		if err != nil {
			return nil
		}
		prod = &got
	}
	in := map[uuid.UUID]bool{}
	for _, id := range prod.APIServices {
		in[id] = true
	}
	for i, id := range p.APIServiceIDs {
		if !in[id] {
			t.v.Add("api_services["+strconv.Itoa(i)+"]", "not a service of the product")
		}
	}
	if len(p.APIServiceIDs) == 0 {
		t.v.Add("api_services", "at least one service")
	}
	return nil
}

// loadGateway reads the template; report says a missing one is this check's failure (else
// the template is only wanted for the cluster's checks).
func (t *targets) loadGateway(ctx context.Context, tenantID, id uuid.UUID, report bool) error {
	gw, err := t.st.GetGateway(ctx, tenantID, id)
	if errors.Is(err, store.ErrNotFound) {
		if report {
			t.v.Add("gateway_id", "no such gateway template")
		}
		return nil
	}
	if err != nil {
		if report {
			return err
		}
		return nil
	}
	t.gateway = &gw
	return nil
}

// checkCluster checks what the cluster must allow. hostnames adds the early answer on the
// publish's own hostname (the tenant owns it, no other publish of the cluster serves it):
// route hostnames and the claim itself are settled when the revision is frozen.
func (t *targets) checkCluster(ctx context.Context, p *models.ProductPublish, hostnames bool) error {
	cl, err := t.st.ClusterRow(ctx, p.ClusterID)
	if errors.Is(err, store.ErrNotFound) {
		t.v.Add("cluster_id", "no such cluster")
		return t.v.Err()
	}
	if err != nil {
		return err
	}
	if t.gateway != nil && t.gateway.GatewayClass != "" && !cl.Capabilities.V.Supports(t.gateway.GatewayClass) {
		t.v.Add("gateway_id", "the cluster does not support gateway class "+t.gateway.GatewayClass)
	}
	if hostnames {
		if err := t.checkHostname(ctx, p); err != nil {
			return err
		}
	}
	// Every backend endpoint must be one the cluster's egress policy allows: the gateway is
	// shared, and its network is not the tenant's to reach into.
	bad, err := t.st.EgressViolations(ctx, cl, p.TenantID, p.APIServiceIDs)
	if err != nil {
		return err
	}
	for _, b := range bad {
		t.v.Add("api_services", b)
	}
	if err := t.v.Err(); err != nil {
		return err
	}
	if cl.Status == models.ClusterMaintenance {
		return fault.Conflicting("cluster_in_maintenance", "cluster "+cl.Name+" is in maintenance: it takes no new deploys", cl.Status)
	}
	return nil
}

func (t *targets) checkHostname(ctx context.Context, p *models.ProductPublish) error {
	notOwned, err := t.st.HostsNotOwned(ctx, p.TenantID, []string{p.Hostname})
	if err != nil {
		return err
	}
	if len(notOwned) > 0 {
		t.v.Add("hostname", "not under a domain your tenant owns (operators grant domains)")
		return nil
	}
	if t.gateway == nil {
		return nil
	}
	var ports []int
	for _, l := range t.gateway.Listeners.V {
		ports = append(ports, l.Port)
	}
	taken, err := t.st.HostTakenElsewhere(ctx, p.ClusterID, p.ID, p.Hostname, ports)
	if err != nil {
		return err
	}
	if taken {
		return fault.Conflicting("hostname_taken", "hostname "+p.Hostname+" is already served on this cluster", "")
	}
	return nil
}
