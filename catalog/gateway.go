package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// GatewayInput is the writable part of a gateway template.
type GatewayInput struct {
	Name         string                   `json:"name"`
	Description  string                   `json:"description"`
	GatewayClass string                   `json:"gateway_class"`
	Listeners    []models.GatewayListener `json:"listeners"`
	Labels       map[string]string        `json:"labels"`
	Status       string                   `json:"status"`
}

// GatewayInputOf returns the writable fields of a gateway template.
func GatewayInputOf(g models.Gateway) GatewayInput {
	return GatewayInput{Name: g.Name, Description: g.Description, GatewayClass: g.GatewayClass, Listeners: g.Listeners.V, Labels: g.Labels, Status: g.Status}
}

// Validate checks a gateway template and returns it as a row (without ids).
func (in *GatewayInput) Validate() (models.Gateway, error) {
	var v validation
	v.Check(len(in.Name) >= 2 && LabelNameRe.MatchString(in.Name), "name", "an RFC 1123 label of 2 to 63 lower-case letters, digits and dashes")
	v.text("description", in.Description, 0, 500)
	v.Check(isOneOf(in.GatewayClass, models.GatewayClassEnvoy, models.GatewayClassNginx), "gateway_class", "must be envoy-gateway or nginx")
	v.listeners(in.Listeners)
	v.labels("labels", in.Labels)
	v.Check(isOneOf(in.Status, models.GatewayActive, models.GatewayInactive), "status", "must be active or inactive")
	if err := v.Err(); err != nil {
		return models.Gateway{}, err
	}
	labels := models.Labels(in.Labels)
	if labels == nil {
		labels = models.Labels{}
	}
	return models.Gateway{Name: in.Name, Description: in.Description, GatewayClass: in.GatewayClass,
		Listeners: models.JSON[[]models.GatewayListener]{V: in.Listeners}, Labels: labels, Status: in.Status}, nil
}

// listeners checks a template's listeners: distinct names and ports, a known protocol, a host
// name only where the protocol matches one, TLS as listenerTLS says.
func (v *validation) listeners(ls []models.GatewayListener) {
	v.Check(len(ls) >= 1 && len(ls) <= MaxListItems, "listeners", fmt.Sprintf("1 to %d listeners", MaxListItems))
	names, ports := map[string]int{}, map[int]int{}
	for i, l := range ls {
		f := fieldAt("listeners", i)
		v.labelName(f+".name", l.Name)
		if j, dup := names[l.Name]; dup {
			v.Add(f+".name", fmt.Sprintf("duplicate of listeners[%d].name", j))
		} else {
			names[l.Name] = i
		}
		v.port(f+".port", l.Port)
		if j, dup := ports[l.Port]; dup {
			v.Add(f+".port", fmt.Sprintf("duplicate of listeners[%d].port", j))
		} else {
			ports[l.Port] = i
		}
		if !isOneOf(l.Protocol, models.ProtocolHTTP, models.ProtocolHTTPS, models.ProtocolTCP, models.ProtocolTLS) {
			v.Add(f+".protocol", "must be HTTP, HTTPS, TCP or TLS")
			continue
		}
		if l.Hostname != "" {
			if l.Protocol == models.ProtocolTCP {
				v.Add(f+".hostname", "a TCP listener matches no host name")
			} else {
				v.gatewayHostname(f+".hostname", l.Hostname)
			}
		}
		v.listenerTLS(f+".tls", l)
		if l.TLS != nil {
			ls[i].TLS.CertificateRefs = orEmpty(l.TLS.CertificateRefs)
		}
	}
}

// listenerTLS applies the Gateway API rules: HTTPS terminates TLS with a certificate; TLS
// passes it through or terminates it; HTTP and TCP have no TLS.
func (v *validation) listenerTLS(field string, l models.GatewayListener) {
	t := l.TLS
	switch l.Protocol {
	case models.ProtocolHTTP, models.ProtocolTCP:
		v.Check(t == nil, field, "only HTTPS and TLS listeners have TLS settings")
		return
	case models.ProtocolHTTPS:
		if t == nil {
			v.Add(field, "an HTTPS listener needs tls with mode Terminate and a certificate")
			return
		}
		v.Check(t.Mode == models.TLSTerminate, field+".mode", "an HTTPS listener terminates TLS: mode must be Terminate")
	case models.ProtocolTLS:
		if t == nil {
			v.Add(field, "a TLS listener needs tls with mode Passthrough or Terminate")
			return
		}
		v.Check(isOneOf(t.Mode, models.TLSTerminate, models.TLSPassthrough), field+".mode", "must be Terminate or Passthrough")
	}
	if t.Mode == models.TLSTerminate {
		v.Check(len(t.CertificateRefs) >= 1 && len(t.CertificateRefs) <= 8, field+".certificate_refs", "1 to 8 certificate references to terminate TLS")
	} else {
		v.Check(len(t.CertificateRefs) == 0, field+".certificate_refs", "Passthrough uses no certificate")
	}
	for i, r := range t.CertificateRefs {
		f := fieldAt(field+".certificate_refs", i)
		v.Check(len(r.Name) <= 253 && gwHostnameRe.MatchString(r.Name) && !strings.HasPrefix(r.Name, "*"), f+".name", "a Kubernetes secret name")
		v.Check(r.Namespace == "" || LabelNameRe.MatchString(r.Namespace), f+".namespace", "a Kubernetes namespace name")
	}
}

// CreateGateway creates a gateway template (envoy-gateway and inactive unless told otherwise).
func (c *Catalog) CreateGateway(ctx context.Context, tenantID uuid.UUID, in GatewayInput) (models.Gateway, error) {
	if in.GatewayClass == "" {
		in.GatewayClass = models.GatewayClassEnvoy
	}
	if in.Status == "" {
		in.Status = models.GatewayInactive
	}
	g, err := in.Validate()
	if err != nil {
		return models.Gateway{}, err
	}
	g.TenantID = tenantID
	if err := c.ownCertificates(ctx, tenantID, g); err != nil {
		return models.Gateway{}, err
	}
	return g, failure(c.store.CreateGateway(ctx, &g), "gateway")
}

// ListGateways lists a tenant's gateway templates, newest first.
func (c *Catalog) ListGateways(ctx context.Context, tenantID uuid.UUID, f store.GatewayFilter, p store.Page) ([]models.Gateway, string, error) {
	rows, next, err := c.store.ListGateways(ctx, tenantID, f, p)
	return rows, next, failure(err, "gateway")
}

// gateways: the name is how publishes and the cluster's objects refer to a template, so a
// change keeps it.
func gateways(c *Catalog) Resource[models.Gateway, GatewayInput] {
	return Resource[models.Gateway, GatewayInput]{
		kind: store.KindGateway, what: "gateway", c: c,
		get: c.store.GetGateway, update: c.store.UpdateGateway, remove: c.store.DeleteGateway,
		inputOf: GatewayInputOf,
		check:   c.ownCertificates,
		apply: func(g *models.Gateway, in GatewayInput) error {
			var v validation
			v.immutable("name", g.Name, in.Name)
			if err := v.Err(); err != nil {
				return err
			}
			return validInto[models.Gateway, GatewayInput](func(g *models.Gateway, next models.Gateway) {
				next.ID, next.TenantID, next.CreatedAt = g.ID, g.TenantID, g.CreatedAt
				*g = next
			})(g, in)
		},
	}
}
