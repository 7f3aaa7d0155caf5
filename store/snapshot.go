package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/snapshot"
)

// RevisionUse is one catalog row a revision depends on.
type RevisionUse struct {
	Kind  string
	RefID uuid.UUID
}

// BuiltSnapshot is a frozen revision's content.
type BuiltSnapshot struct {
	Bytes    []byte
	Checksum string
	Uses     []RevisionUse
}

// Checksum is the hex SHA-256 of snapshot bytes: what agents verify.
func Checksum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// BuildSnapshot assembles the snapshot of a publish from the catalog as it is now, inside tx.
// Active routes of the publish's services, their backends, and per route the effective
// policies (route > service > global); the template's listeners; auth mode and hostname.
// Everything is ordered by name so the same catalog always gives the same bytes (the shape of
// the document is package snapshot's, shared with the agent).
func BuildSnapshot(ctx context.Context, tx *gorm.DB, p models.ProductPublish, src SnapshotSource) (BuiltSnapshot, error) {
	b := &snapshotBuilder{tx: tx.WithContext(ctx), p: p, src: src}
	s, err := b.build()
	if err != nil {
		return BuiltSnapshot{}, err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return BuiltSnapshot{}, err
	}
	sort.Slice(b.uses, func(i, j int) bool {
		if b.uses[i].Kind != b.uses[j].Kind {
			return b.uses[i].Kind < b.uses[j].Kind
		}
		return b.uses[i].RefID.String() < b.uses[j].RefID.String()
	})
	return BuiltSnapshot{Bytes: data, Checksum: Checksum(data), Uses: b.uses}, nil
}

// SnapshotSource holds rows of the publish's catalog its caller has read already in the same
// transaction (the validation of its targets); a nil one is read.
type SnapshotSource struct {
	Product *models.Product
	Gateway *models.Gateway
}

// snapshotBuilder reads one publish's catalog and records every row the revision uses.
type snapshotBuilder struct {
	tx     *gorm.DB
	p      models.ProductPublish
	src    SnapshotSource
	global []models.Policy // the tenant's global policies
	uses   []RevisionUse

	// The catalog of the publish's services, read for all of them at once (loadCatalog), by
	// service, each list in name order.
	routes   map[uuid.UUID][]models.Route
	backends map[uuid.UUID][]models.Backend
	policies map[uuid.UUID][]models.Policy // a service's own and its routes' (any status)
}

// policyRow is a policy with the service of its route, if it has one.
type policyRow struct {
	models.Policy
	RouteServiceID *uuid.UUID `gorm:"column:route_service_id"`
}

// loadCatalog reads the active routes, the backends and the policies (global, of a service,
// of a service's route) of every service of the publish: three statements however many
// services it has, where it was two and three a service.
func (b *snapshotBuilder) loadCatalog(services []models.APIService) error {
	p, tx := b.p, b.tx
	ids := make([]uuid.UUID, len(services))
	for i, svc := range services {
		ids[i] = svc.ID
	}
	var routes []models.Route
	if err := tx.Where("tenant_id = ? AND api_service_id IN ? AND status = ?", p.TenantID, ids, models.RouteActive).Order("name").Find(&routes).Error; err != nil {
		return err
	}
	var backends []models.Backend
	if err := tx.Where("tenant_id = ? AND api_service_id IN ?", p.TenantID, ids).Order("name").Find(&backends).Error; err != nil {
		return err
	}
	var policies []policyRow
	if err := tx.Raw(`SELECT p.*, r.api_service_id AS route_service_id FROM policies p LEFT JOIN routes r ON r.id = p.route_id
		WHERE p.tenant_id = ? AND (p.scope = 'global' OR p.api_service_id IN ? OR r.api_service_id IN ?)`, p.TenantID, ids, ids).
		Scan(&policies).Error; err != nil {
		return err
	}
	b.routes, b.backends, b.policies = map[uuid.UUID][]models.Route{}, map[uuid.UUID][]models.Backend{}, map[uuid.UUID][]models.Policy{}
	for _, r := range routes {
		b.routes[r.APIServiceID] = append(b.routes[r.APIServiceID], r)
	}
	for _, be := range backends {
		b.backends[be.APIServiceID] = append(b.backends[be.APIServiceID], be)
	}
	for _, pr := range policies {
		if pr.Scope == "global" {
			b.global = append(b.global, pr.Policy)
			continue
		}
		// As each service's own query read them: by the policy's service or its route's.
		for _, id := range ids {
			if (pr.APIServiceID != nil && *pr.APIServiceID == id) || (pr.RouteServiceID != nil && *pr.RouteServiceID == id) {
				b.policies[id] = append(b.policies[id], pr.Policy)
			}
		}
	}
	return nil
}

func (b *snapshotBuilder) use(kind string, id uuid.UUID) {
	b.uses = append(b.uses, RevisionUse{kind, id})
}

// build reads the publish's product, template, services and their catalog (loadCatalog).
func (b *snapshotBuilder) build() (snapshot.Snapshot, error) {
	p, tx := b.p, b.tx
	var product models.Product
	if b.src.Product != nil && b.src.Product.ID == p.ProductID {
		product = *b.src.Product
	} else if err := tx.Take(&product, "tenant_id = ? AND id = ?", p.TenantID, p.ProductID).Error; err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("product %s: %w", p.ProductID, notFound(err))
	}
	var gw models.Gateway
	if b.src.Gateway != nil && b.src.Gateway.ID == p.GatewayID {
		gw = *b.src.Gateway
	} else if err := tx.Take(&gw, "tenant_id = ? AND id = ?", p.TenantID, p.GatewayID).Error; err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("gateway template %s: %w", p.GatewayID, notFound(err))
	}
	var services []models.APIService
	if err := tx.Where("tenant_id = ? AND id IN ?", p.TenantID, []uuid.UUID(p.APIServiceIDs)).Order("name").Find(&services).Error; err != nil {
		return snapshot.Snapshot{}, err
	}
	if len(services) != len(p.APIServiceIDs) {
		return snapshot.Snapshot{}, fmt.Errorf("a service of the publish no longer exists: %w", ErrNotFound)
	}
	if err := b.loadCatalog(services); err != nil {
		return snapshot.Snapshot{}, err
	}
	b.use("product", product.ID)
	b.use("gateway", gw.ID)
	for _, pol := range b.global {
		b.use("policy", pol.ID)
	}

	s := snapshot.Snapshot{
		PublishID:   p.ID.String(),
		TenantID:    p.TenantID.String(),
		Product:     snapshot.Product{ID: product.ID.String(), Name: product.Name, Version: product.Version},
		ClusterID:   p.ClusterID.String(),
		Environment: p.Environment,
		Hostname:    p.Hostname,
		AuthMode:    p.AuthMode,
		AuthConfig:  p.AuthConfig,
		Gateway:     snapshotGateway(gw),
		APIServices: []snapshot.APIService{},
	}
	if s.AuthConfig == nil {
		s.AuthConfig = map[string]any{}
	}
	for _, svc := range services {
		ss, err := b.service(svc)
		if err != nil {
			return snapshot.Snapshot{}, err
		}
		s.APIServices = append(s.APIServices, ss)
	}
	return s, nil
}

// snapshotGateway is a gateway template with its listeners (a listener's first certificate
// reference only).
func snapshotGateway(gw models.Gateway) snapshot.Gateway {
	g := snapshot.Gateway{ID: gw.ID.String(), Name: gw.Name, GatewayClass: gw.GatewayClass, Listeners: []snapshot.Listener{}}
	for _, l := range gw.Listeners.V {
		sl := snapshot.Listener{Name: l.Name, Port: l.Port, Protocol: l.Protocol, Hostname: l.Hostname}
		if l.TLS != nil {
			sl.TLS = &snapshot.ListenerTLS{Mode: l.TLS.Mode}
			if len(l.TLS.CertificateRefs) > 0 {
				sl.TLS.CertificateRef = l.TLS.CertificateRefs[0].Name
			}
		}
		g.Listeners = append(g.Listeners, sl)
	}
	return g
}

// service is one service's active routes, backends and policies (loadCatalog), with each
// route's effective policies.
func (b *snapshotBuilder) service(svc models.APIService) (snapshot.APIService, error) {
	b.use("api_service", svc.ID)
	routes, backends, policies := b.routes[svc.ID], b.backends[svc.ID], b.policies[svc.ID]
	var svcPolicies []models.Policy
	byRoute := map[uuid.UUID][]models.Policy{}
	for _, pol := range policies {
		b.use("policy", pol.ID)
		switch {
		case pol.Scope == "route" && pol.RouteID != nil:
			byRoute[*pol.RouteID] = append(byRoute[*pol.RouteID], pol)
		case pol.Scope == "service":
			svcPolicies = append(svcPolicies, pol)
		}
	}

	ss := snapshot.APIService{ID: svc.ID.String(), Name: svc.Name, Version: svc.Version,
		Routes: []snapshot.Route{}, Backends: []snapshot.Backend{}, Policies: []snapshot.Policy{}}
	names := map[uuid.UUID]string{}
	for _, be := range backends {
		b.use("backend", be.ID)
		names[be.ID] = be.Name
		ss.Backends = append(ss.Backends, snapshotBackend(be))
	}
	for _, r := range routes {
		b.use("route", r.ID)
		eff := models.EffectivePolicies(b.global, svcPolicies, byRoute[r.ID])
		ss.Routes = append(ss.Routes, snapshotRoutes(r, eff, names)...)
	}
	return ss, nil
}

// snapshotBackend is a backend with its options; absent lists are empty, never null.
func snapshotBackend(b models.Backend) snapshot.Backend {
	eps := make([]snapshot.Endpoint, 0, len(b.Endpoints.V))
	for _, ep := range b.Endpoints.V {
		eps = append(eps, snapshot.Endpoint(ep))
	}
	sb := snapshot.Backend{ID: b.ID.String(), Name: b.Name, Scheme: b.Scheme, Endpoints: eps, LBPolicy: b.LBPolicy,
		Timeouts: snapshot.BackendTimeouts{ConnectMS: deref(b.ConnectTimeoutMS), RequestMS: deref(b.TimeoutMS), IdleMS: deref(b.IdleTimeoutMS)}}
	if h := b.ConsistentHash.V; h != nil {
		sb.ConsistentHash = &snapshot.ConsistentHash{Type: h.Type, HeaderName: h.HeaderName}
		if h.Cookie != nil {
			sb.ConsistentHash.Cookie = &snapshot.HashCookie{Name: h.Cookie.Name, TTLSeconds: h.Cookie.TTLSeconds}
		}
	}
	if hc := b.HealthCheck.V; hc != nil {
		v := snapshot.HealthCheck(*hc)
		sb.HealthCheck = &v
	}
	if cb := b.CircuitBreaker.V; cb != nil {
		v := *cb
		sb.CircuitBreaker = &v
	}
	if rt := b.Retry.V; rt != nil {
		sb.Retry = &snapshot.Retry{NumRetries: rt.NumRetries, RetryOn: rt.RetryOn, PerTryTimeoutMS: rt.PerTryTimeoutMS}
		if rt.Backoff != nil {
			v := *rt.Backoff
			sb.Retry.Backoff = &v
		}
	}
	if t := b.TLS.V; t != nil {
		v := *t
		sb.TLS = &v
	}
	return sb
}

// snapshotRoutes turns a catalog route into one snapshot route per path (the agent's route has
// one path match); the first keeps the route's name, the others get "-2", "-3", ... Absent
// lists are empty, never null.
func snapshotRoutes(r models.Route, effective []models.Policy, backendNames map[uuid.UUID]string) []snapshot.Route {
	policies := make([]snapshot.Policy, 0, len(effective))
	for _, e := range effective {
		policies = append(policies, snapshot.Policy{ID: e.ID.String(), Name: e.Name, Type: e.Type, Scope: e.Scope, Priority: e.Priority, Spec: e.Spec.V})
	}
	refs := make([]snapshot.BackendRef, 0, len(r.BackendRefs.V))
	for _, ref := range r.BackendRefs.V {
		refs = append(refs, snapshot.BackendRef{BackendID: ref.BackendID.String(), BackendName: backendNames[ref.BackendID], Weight: ref.Weight})
	}
	hosts := []string(r.Hostnames)
	if hosts == nil {
		hosts = []string{}
	}
	methods := []string(r.Methods)
	if methods == nil {
		methods = []string{}
	}
	headers := make([]snapshot.ValueMatch, 0, len(r.Headers.V))
	for _, h := range r.Headers.V {
		headers = append(headers, snapshot.ValueMatch(h))
	}
	query := make([]snapshot.ValueMatch, 0, len(r.QueryParams.V))
	for _, q := range r.QueryParams.V {
		query = append(query, snapshot.ValueMatch(q))
	}
	timeouts := snapshot.RouteTimeouts{RequestMS: deref(r.Timeouts.RequestMS), BackendRequestMS: deref(r.Timeouts.BackendRequestMS)}

	out := make([]snapshot.Route, 0, len(r.Paths.V))
	for i, path := range r.Paths.V {
		name := r.Name
		if i > 0 {
			name = fmt.Sprintf("%s-%d", r.Name, i+1)
		}
		out = append(out, snapshot.Route{ID: r.ID.String(), Name: name, Hostnames: hosts,
			Matches:     snapshot.RouteMatches{Path: snapshot.PathMatch(path), Methods: methods, Headers: headers, QueryParams: query},
			BackendRefs: refs, Priority: r.Priority, Timeouts: timeouts, Policies: policies})
	}
	return out
}
