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
)

// The snapshot is what agents fetch for a revision: the whole configuration of the publish,
// with every policy already resolved per route. It holds no revision number, so a rollback
// that copies an older revision's bytes also has its checksum.
type snapshot struct {
	PublishID string `json:"publish_id"`
	// TenantID is the publish's tenant: renderers place its certificates apart from every
	// other tenant's.
	TenantID    string           `json:"tenant_id"`
	Product     snapProduct      `json:"product"`
	ClusterID   string           `json:"cluster_id"`
	Environment string           `json:"environment"`
	Hostname    string           `json:"hostname"`
	AuthMode    string           `json:"auth_mode"`
	AuthConfig  models.JSONMap   `json:"auth_config"`
	Gateway     snapGateway      `json:"gateway"`
	APIServices []snapAPIService `json:"api_services"`
}

type snapProduct struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

type snapGateway struct {
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	GatewayClass string         `json:"gateway_class"`
	Listeners    []snapListener `json:"listeners"`
}

type snapListener struct {
	Name     string   `json:"name"`
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"`
	Hostname string   `json:"hostname"`
	TLS      *snapTLS `json:"tls,omitempty"`
}

type snapTLS struct {
	Mode           string `json:"mode"`
	CertificateRef string `json:"certificate_ref"`
}

type snapAPIService struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Version  string        `json:"version"`
	Routes   []snapRoute   `json:"routes"`
	Backends []snapBackend `json:"backends"`
	Policies []snapPolicy  `json:"policies"`
}

type snapRoute struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Hostnames   []string          `json:"hostnames"`
	Matches     snapMatches       `json:"matches"`
	BackendRefs []snapBackendRef  `json:"backend_refs"`
	Priority    int               `json:"priority"`
	Timeouts    snapRouteTimeouts `json:"timeouts"`
	Policies    []snapPolicy      `json:"policies"`
}

type snapMatches struct {
	Path        models.PathMatch         `json:"path"`
	Methods     []string                 `json:"methods"`
	Headers     []models.HeaderMatch     `json:"headers"`
	QueryParams []models.QueryParamMatch `json:"query_params"`
}

type snapBackendRef struct {
	BackendID   string `json:"backend_id"`
	BackendName string `json:"backend_name"`
	Weight      int    `json:"weight"`
}

type snapRouteTimeouts struct {
	RequestMS        int `json:"request_ms"`
	BackendRequestMS int `json:"backend_request_ms"`
}

type snapBackend struct {
	ID             string                   `json:"id"`
	Name           string                   `json:"name"`
	Scheme         string                   `json:"scheme"`
	Endpoints      []models.BackendEndpoint `json:"endpoints"`
	LBPolicy       string                   `json:"lb_policy"`
	ConsistentHash *models.ConsistentHash   `json:"consistent_hash,omitempty"`
	Timeouts       snapBackendTimeouts      `json:"timeouts"`
	HealthCheck    *models.HealthCheck      `json:"health_check,omitempty"`
	CircuitBreaker *models.CircuitBreaker   `json:"circuit_breaker,omitempty"`
	Retry          *models.BackendRetry     `json:"retry,omitempty"`
	TLS            *models.BackendTLS       `json:"tls,omitempty"`
}

type snapBackendTimeouts struct {
	ConnectMS int `json:"connect_ms"`
	RequestMS int `json:"request_ms"`
	IdleMS    int `json:"idle_ms"`
}

type snapPolicy struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Type     string          `json:"type"`
	Scope    string          `json:"scope"`
	Priority int             `json:"priority"`
	Spec     json.RawMessage `json:"spec"`
}

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
// Everything is ordered by name so the same catalog always gives the same bytes.
func BuildSnapshot(ctx context.Context, tx *gorm.DB, p models.ProductPublish) (BuiltSnapshot, error) {
	tx = tx.WithContext(ctx)
	var out BuiltSnapshot
	var product models.Product
	if err := tx.Take(&product, "tenant_id = ? AND id = ?", p.TenantID, p.ProductID).Error; err != nil {
		return out, fmt.Errorf("product %s: %w", p.ProductID, notFound(err))
	}
	var gw models.Gateway
	if err := tx.Take(&gw, "tenant_id = ? AND id = ?", p.TenantID, p.GatewayID).Error; err != nil {
		return out, fmt.Errorf("gateway template %s: %w", p.GatewayID, notFound(err))
	}
	var services []models.APIService
	if err := tx.Where("tenant_id = ? AND id IN ?", p.TenantID, []uuid.UUID(p.APIServiceIDs)).Order("name").Find(&services).Error; err != nil {
		return out, err
	}
	if len(services) != len(p.APIServiceIDs) {
		return out, fmt.Errorf("a service of the publish no longer exists: %w", ErrNotFound)
	}
	var global []models.Policy
	if err := tx.Where("tenant_id = ? AND scope = 'global'", p.TenantID).Find(&global).Error; err != nil {
		return out, err
	}
	out.Uses = append(out.Uses, RevisionUse{"product", product.ID}, RevisionUse{"gateway", gw.ID})
	for _, pol := range global {
		out.Uses = append(out.Uses, RevisionUse{"policy", pol.ID})
	}

	s := snapshot{
		PublishID:   p.ID.String(),
		TenantID:    p.TenantID.String(),
		Product:     snapProduct{ID: product.ID.String(), Name: product.Name, Version: product.Version},
		ClusterID:   p.ClusterID.String(),
		Environment: p.Environment,
		Hostname:    p.Hostname,
		AuthMode:    p.AuthMode,
		AuthConfig:  p.AuthConfig,
		Gateway:     snapGateway{ID: gw.ID.String(), Name: gw.Name, GatewayClass: gw.GatewayClass, Listeners: []snapListener{}},
		APIServices: []snapAPIService{},
	}
	if s.AuthConfig == nil {
		s.AuthConfig = models.JSONMap{}
	}
	for _, l := range gw.Listeners.V {
		sl := snapListener{Name: l.Name, Port: l.Port, Protocol: l.Protocol, Hostname: l.Hostname}
		if l.TLS != nil {
			sl.TLS = &snapTLS{Mode: l.TLS.Mode}
			if len(l.TLS.CertificateRefs) > 0 {
				sl.TLS.CertificateRef = l.TLS.CertificateRefs[0].Name
			}
		}
		s.Gateway.Listeners = append(s.Gateway.Listeners, sl)
	}

	for _, svc := range services {
		out.Uses = append(out.Uses, RevisionUse{"api_service", svc.ID})
		var routes []models.Route
		if err := tx.Where("tenant_id = ? AND api_service_id = ? AND status = ?", p.TenantID, svc.ID, models.RouteActive).Order("name").Find(&routes).Error; err != nil {
			return out, err
		}
		var backends []models.Backend
		if err := tx.Where("tenant_id = ? AND api_service_id = ?", p.TenantID, svc.ID).Order("name").Find(&backends).Error; err != nil {
			return out, err
		}
		var policies []models.Policy
		if err := tx.Where("tenant_id = ? AND (api_service_id = ? OR route_id IN (SELECT id FROM routes WHERE api_service_id = ?))", p.TenantID, svc.ID, svc.ID).Find(&policies).Error; err != nil {
			return out, err
		}
		var svcPolicies []models.Policy
		byRoute := map[uuid.UUID][]models.Policy{}
		for _, pol := range policies {
			out.Uses = append(out.Uses, RevisionUse{"policy", pol.ID})
			switch {
			case pol.Scope == "route" && pol.RouteID != nil:
				byRoute[*pol.RouteID] = append(byRoute[*pol.RouteID], pol)
			case pol.Scope == "service":
				svcPolicies = append(svcPolicies, pol)
			}
		}
		names := map[uuid.UUID]string{}
		sb := snapAPIService{ID: svc.ID.String(), Name: svc.Name, Version: svc.Version, Routes: []snapRoute{}, Backends: []snapBackend{}, Policies: []snapPolicy{}}
		for _, b := range backends {
			out.Uses = append(out.Uses, RevisionUse{"backend", b.ID})
			names[b.ID] = b.Name
			eps := b.Endpoints.V
			if eps == nil {
				eps = []models.BackendEndpoint{}
			}
			sb.Backends = append(sb.Backends, snapBackend{ID: b.ID.String(), Name: b.Name, Scheme: b.Scheme, Endpoints: eps, LBPolicy: b.LBPolicy,
				ConsistentHash: b.ConsistentHash.V, HealthCheck: b.HealthCheck.V, CircuitBreaker: b.CircuitBreaker.V, Retry: b.Retry.V, TLS: b.TLS.V,
				Timeouts: snapBackendTimeouts{ConnectMS: deref(b.ConnectTimeoutMS), RequestMS: deref(b.TimeoutMS), IdleMS: deref(b.IdleTimeoutMS)}})
		}
		for _, r := range routes {
			out.Uses = append(out.Uses, RevisionUse{"route", r.ID})
			eff := models.EffectivePolicies(global, svcPolicies, byRoute[r.ID])
			sp := make([]snapPolicy, 0, len(eff))
			for _, e := range eff {
				sp = append(sp, snapPolicy{ID: e.ID.String(), Name: e.Name, Type: e.Type, Scope: e.Scope, Priority: e.Priority, Spec: e.Spec.V})
			}
			refs := make([]snapBackendRef, 0, len(r.BackendRefs.V))
			for _, ref := range r.BackendRefs.V {
				refs = append(refs, snapBackendRef{BackendID: ref.BackendID.String(), BackendName: names[ref.BackendID], Weight: ref.Weight})
			}
			paths := r.Paths.V
			// A route with several paths becomes one snapshot route per path (the agent's
			// route has one path match); the first keeps the route's name.
			for i, path := range paths {
				name := r.Name
				if i > 0 {
					name = fmt.Sprintf("%s-%d", r.Name, i+1)
				}
				hosts := []string(r.Hostnames)
				if hosts == nil {
					hosts = []string{}
				}
				methods := []string(r.Methods)
				if methods == nil {
					methods = []string{}
				}
				headers, query := r.Headers.V, r.QueryParams.V
				if headers == nil {
					headers = []models.HeaderMatch{}
				}
				if query == nil {
					query = []models.QueryParamMatch{}
				}
				sb.Routes = append(sb.Routes, snapRoute{ID: r.ID.String(), Name: name, Hostnames: hosts,
					Matches:     snapMatches{Path: path, Methods: methods, Headers: headers, QueryParams: query},
					BackendRefs: refs, Priority: r.Priority, Policies: sp,
					Timeouts: snapRouteTimeouts{RequestMS: deref(r.Timeouts.RequestMS), BackendRequestMS: deref(r.Timeouts.BackendRequestMS)}})
			}
		}
		s.APIServices = append(s.APIServices, sb)
	}
	sort.Slice(out.Uses, func(i, j int) bool {
		if out.Uses[i].Kind != out.Uses[j].Kind {
			return out.Uses[i].Kind < out.Uses[j].Kind
		}
		return out.Uses[i].RefID.String() < out.Uses[j].RefID.String()
	})
	b, err := json.Marshal(s)
	if err != nil {
		return out, err
	}
	out.Bytes, out.Checksum = b, Checksum(b)
	return out, nil
}
