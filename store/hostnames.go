package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/imprun/imprun-server/models"
)

// ErrHostTaken is returned by ClaimHosts when another publish serves a hostname on the same
// cluster and port. The error says which name, never whose.
var ErrHostTaken = errors.New("hostname is already served on this cluster")

// HostPort is one hostname a publish serves on one listener port ("*" when it names none).
type HostPort struct {
	Port     int
	Hostname string
}

// AddTenantDomain grants a domain to a tenant. A domain that equals, contains or lies inside a
// domain of another tenant is ErrConflict: two owners of one name could take each other's
// traffic (a wildcard of the outer one would catch the inner one's hosts).
func (s *Store) AddTenantDomain(ctx context.Context, d *models.TenantDomain) error {
	return s.db(ctx).Transaction(func(tx *gorm.DB) error {
		// Serialise grants: two racing grants of nested domains must not both pass the check.
		if err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtext('tenant_domains'))`).Error; err != nil {
			return err
		}
		var clash int64
		if err := tx.Raw(`SELECT count(*) FROM tenant_domains WHERE tenant_id <> ? AND (domain = ? OR ? LIKE '%.' || domain OR domain LIKE '%.' || ?)`,
			d.TenantID, d.Domain, d.Domain, d.Domain).Scan(&clash).Error; err != nil {
			return err
		}
		if clash > 0 {
			return ErrConflict
		}
		err := tx.Create(d).Error
		if IsUniqueViolation(err, "") {
			return ErrConflict
		}
		return err
	})
}

// ListTenantDomains lists a tenant's domains by name.
func (s *Store) ListTenantDomains(ctx context.Context, tenantID uuid.UUID) ([]models.TenantDomain, error) {
	var out []models.TenantDomain
	err := s.db(ctx).Where("tenant_id = ?", tenantID).Order("domain").Find(&out).Error
	return out, err
}

// DeleteTenantDomain removes a grant. Live publishes keep their claims until they are withdrawn;
// new revisions under the domain are refused.
func (s *Store) DeleteTenantDomain(ctx context.Context, tenantID, id uuid.UUID) (models.TenantDomain, error) {
	var rows []models.TenantDomain
	if err := s.db(ctx).Raw(`DELETE FROM tenant_domains WHERE tenant_id = ? AND id = ? RETURNING *`, tenantID, id).Scan(&rows).Error; err != nil {
		return models.TenantDomain{}, err
	}
	if len(rows) == 0 {
		return models.TenantDomain{}, ErrNotFound
	}
	return rows[0], nil
}

// HostsNotOwned returns the hostnames (wildcards included) that lie under no domain of the
// tenant, and "*" (no hostname at all) always: on a shared cluster a publish names its hosts.
func (s *Store) HostsNotOwned(ctx context.Context, tenantID uuid.UUID, hosts []string) ([]string, error) {
	var domains []string
	if err := s.db(ctx).Raw(`SELECT domain FROM tenant_domains WHERE tenant_id = ?`, tenantID).Scan(&domains).Error; err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hosts {
		base := strings.TrimPrefix(h, "*.")
		owned := false
		for _, d := range domains {
			if h != "*" && (base == d || strings.HasSuffix(base, "."+d)) {
				owned = true
				break
			}
		}
		if !owned {
			out = append(out, h)
		}
	}
	return out, nil
}

// HostTakenElsewhere reports whether another publish holds hostname on any of the ports on the
// cluster (the early 409 of a create; ClaimHosts decides for good).
func (s *Store) HostTakenElsewhere(ctx context.Context, clusterID, publishID uuid.UUID, hostname string, ports []int) (bool, error) {
	if len(ports) == 0 {
		return false, nil
	}
	var n int64
	err := s.db(ctx).Raw(`SELECT count(*) FROM publish_host_claims WHERE cluster_id = ? AND hostname = ? AND port IN ? AND publish_id <> ?`,
		clusterID, hostname, ports, publishID).Scan(&n).Error
	return n > 0, err
}

// SnapshotHosts works out, from a frozen snapshot, every (port, hostname) the publish serves:
// each listener serves the route hostnames (else the publish's hostname), restricted to the
// listener's own hostname when it has one.
func SnapshotHosts(snapshot []byte) ([]HostPort, error) {
	var s struct {
		Hostname string `json:"hostname"`
		Gateway  struct {
			Listeners []struct {
				Port     int    `json:"port"`
				Hostname string `json:"hostname"`
			} `json:"listeners"`
		} `json:"gateway"`
		APIServices []struct {
			Routes []struct {
				Hostnames []string `json:"hostnames"`
			} `json:"routes"`
		} `json:"api_services"`
	}
	if err := json.Unmarshal(snapshot, &s); err != nil {
		return nil, fmt.Errorf("read snapshot hosts: %w", err)
	}
	names := map[string]bool{}
	for _, svc := range s.APIServices {
		for _, r := range svc.Routes {
			hs := r.Hostnames
			if len(hs) == 0 {
				hs = []string{s.Hostname}
			}
			for _, h := range hs {
				if h == "" {
					h = "*"
				}
				names[strings.ToLower(h)] = true
			}
		}
	}
	seen := map[HostPort]bool{}
	var out []HostPort
	for _, l := range s.Gateway.Listeners {
		for h := range names {
			if l.Hostname != "" && h != strings.ToLower(l.Hostname) {
				continue
			}
			hp := HostPort{Port: l.Port, Hostname: h}
			if !seen[hp] {
				seen[hp] = true
				out = append(out, hp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Hostname < out[j].Hostname
	})
	return out, nil
}

// ClaimHosts makes the publish the one server of hosts on its cluster, replacing what it held
// before. A host another publish holds is ErrHostTaken (wrapped, naming the host and port);
// the claims it did make stay until the caller's transaction rolls back, so run it in InTx.
func (s *Store) ClaimHosts(ctx context.Context, p models.ProductPublish, hosts []HostPort) error {
	ports, names := make([]int32, len(hosts)), make([]string, len(hosts))
	for i, h := range hosts {
		ports[i], names[i] = int32(h.Port), h.Hostname
	}
	// One statement: the claims the publish keeps are left as they are (a delete and insert
	// of one key in one statement would each see the row as it was), the ones it no longer
	// makes go, and the new ones are inserted; a name another publish of the cluster holds
	// is neither inserted nor updated, and is returned.
	var taken []HostPort
	err := s.readRows(ctx, `WITH want AS (
			SELECT DISTINCT w.port, w.hostname FROM unnest($4::int[], $5::text[]) AS w(port, hostname)
		), gone AS (
			DELETE FROM publish_host_claims c WHERE c.publish_id = $1
			AND NOT (c.cluster_id = $2 AND (c.port, c.hostname) IN (SELECT port, hostname FROM want))
		), ins AS (
			INSERT INTO publish_host_claims (publish_id, cluster_id, port, hostname, tenant_id)
			SELECT $1, $2, port, hostname, $3 FROM want
			ON CONFLICT (cluster_id, port, hostname) DO UPDATE SET tenant_id = excluded.tenant_id
			WHERE publish_host_claims.publish_id = excluded.publish_id
			RETURNING port, hostname
		)
		SELECT w.port, w.hostname FROM want w
		WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.port = w.port AND ins.hostname = w.hostname)
		ORDER BY w.port, w.hostname`, []any{p.ID, p.ClusterID, p.TenantID, ports, names}, func(rs rowScanner) error {
		var h HostPort
		var port int32
		if err := rs.Scan(&port, &h.Hostname); err != nil {
			return err
		}
		h.Port = int(port)
		taken = append(taken, h)
		return nil
	})
	if err != nil {
		return err
	}
	if len(taken) > 0 {
		return fmt.Errorf("%w: %s on port %d", ErrHostTaken, taken[0].Hostname, taken[0].Port)
	}
	return nil
}

// ReleaseHosts gives up every hostname the publish holds.
func (s *Store) ReleaseHosts(ctx context.Context, publishID uuid.UUID) error {
	return releaseHosts(ctx, s.db(ctx), publishID)
}

// releaseHosts is ReleaseHosts inside a transaction of this package.
func releaseHosts(ctx context.Context, tx *gorm.DB, publishID uuid.UUID) error {
	return tx.WithContext(ctx).Exec(`DELETE FROM publish_host_claims WHERE publish_id = ?`, publishID).Error
}
