// Package publish owns the rules and use cases of a ProductPublish: what a valid publish is,
// what it may point at (checked when it is created or edited and again when a revision is
// frozen), and the actions that claim it for a workflow run: publish, rollback, withdraw.
// Transports (REST, the activities) decode their input, call one function here and map the
// fault it returns.
package publish

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
)

// Changes is the input of create (all fields) and of a draft's edit (any subset).
type Changes struct {
	ProductID        *string         `json:"product_id"`
	ClusterID        *string         `json:"cluster_id"`
	GatewayID        *string         `json:"gateway_id"`
	APIServices      *[]string       `json:"api_services"`
	Environment      *string         `json:"environment"`
	Hostname         *string         `json:"hostname"`
	AuthMode         *string         `json:"auth_mode"`
	AuthConfig       *map[string]any `json:"auth_config"`
	Visibility       *string         `json:"visibility"`
	ApprovalRequired *bool           `json:"approval_required"`
	DeadlineSeconds  *int            `json:"deadline_seconds"`
	// Draft, on create only, saves the publish without starting a run.
	Draft bool `json:"draft"`
}

// touched says which references a change sets, so an edit re-checks only those.
type touched struct{ product, cluster, gateway bool }

// apply checks the fields of ch that need nothing but themselves and writes them into p;
// create demands the required ones. It writes the service list only when ch has one (the
// product's services are the default, see checkTargets).
func apply(ch Changes, p *models.ProductPublish, create bool) (touched, error) {
	if create && (ch.ClusterID == nil || *ch.ClusterID == "") {
		return touched{}, fault.BadInput("cluster_required", "a publish needs the cluster it deploys to", fault.FieldError{Field: "cluster_id", Message: "required"})
	}
	var v fault.Validator
	parseID := func(field string, s *string, dst *uuid.UUID) bool {
		if s == nil {
			if create {
				v.Add(field, "required")
			}
			return false
		}
		id, err := uuid.Parse(*s)
		if err != nil {
			v.Add(field, "must be a UUID")
			return false
		}
		*dst = id
		return true
	}
	var t touched
	t.product = parseID("product_id", ch.ProductID, &p.ProductID)
	t.cluster = parseID("cluster_id", ch.ClusterID, &p.ClusterID)
	t.gateway = parseID("gateway_id", ch.GatewayID, &p.GatewayID)
	if ch.Environment != nil {
		p.Environment = *ch.Environment
	}
	if create || ch.Environment != nil {
		v.Check(p.Environment == models.EnvDev || p.Environment == models.EnvStage || p.Environment == models.EnvProd, "environment", "must be dev, stage or prod")
	}
	if ch.Hostname != nil {
		p.Hostname = strings.ToLower(*ch.Hostname)
		v.Check(len(p.Hostname) <= 253 && models.HostnameRe.MatchString(p.Hostname), "hostname", "must be a DNS name")
	}
	if create && p.Hostname == "" {
		v.Add("hostname", "required")
	}
	applyAccess(ch, p, &v)
	if ch.DeadlineSeconds != nil {
		d := *ch.DeadlineSeconds
		v.Check(d >= 10 && d <= 30*24*3600, "deadline_seconds", "from 10 seconds to 30 days")
		p.DeadlineSeconds = &d
	}
	return t, v.Err()
}

// applyAccess writes and checks who may call the published API and how: auth mode and its
// settings, visibility in the marketplace, whether subscriptions need approval.
func applyAccess(ch Changes, p *models.ProductPublish, v *fault.Validator) {
	if ch.AuthMode != nil {
		p.AuthMode = *ch.AuthMode
	}
	if p.AuthMode == "" {
		p.AuthMode = models.AuthNone
	}
	if ch.AuthConfig != nil {
		p.AuthConfig = models.JSONMap(*ch.AuthConfig)
	}
	validateAuth(v, p.AuthMode, p.AuthConfig)
	if ch.Visibility != nil {
		p.Visibility = *ch.Visibility
	}
	if p.Visibility == "" {
		p.Visibility = models.VisibilityPublic
	}
	v.Check(p.Visibility == models.VisibilityPublic || p.Visibility == models.VisibilityPrivate, "visibility", "must be public or private")
	if ch.ApprovalRequired != nil {
		p.ApprovalRequired = *ch.ApprovalRequired
	}
}

// parseServices turns the requested service ids into a distinct list, naming each bad entry.
func parseServices(list []string, v *fault.Validator) models.UUIDArray {
	ids := make(models.UUIDArray, 0, len(list))
	seen := map[uuid.UUID]bool{}
	for i, s := range list {
		id, err := uuid.Parse(s)
		if err != nil || seen[id] {
			v.Add("api_services["+strconv.Itoa(i)+"]", "must be a distinct UUID")
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids
}

func validateAuth(v *fault.Validator, mode string, cfg models.JSONMap) {
	switch mode {
	case models.AuthNone, models.AuthAPIKey:
		for k := range cfg {
			if mode == models.AuthAPIKey && k == "header" {
				if s, ok := cfg[k].(string); !ok || s == "" || len(s) > 100 {
					v.Add("auth_config.header", "a header name")
				}
				continue
			}
			v.Add("auth_config."+k, "unknown field for auth mode "+mode)
		}
	case models.AuthOAuth2:
		iss, _ := cfg["issuer"].(string)
		u, err := url.Parse(iss)
		v.Check(err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "", "auth_config.issuer", "required: the issuer URL")
		aud, _ := cfg["audience"].(string)
		v.Check(aud != "", "auth_config.audience", "required")
		for k, val := range cfg {
			switch k {
			case "issuer", "audience":
			case "scopes":
				list, ok := val.([]any)
				good := ok
				for _, s := range list {
					if _, isStr := s.(string); !isStr {
						good = false
					}
				}
				v.Check(good, "auth_config.scopes", "a list of strings")
			default:
				v.Add("auth_config."+k, "unknown field for auth mode oauth2")
			}
		}
	default:
		v.Add("auth_mode", "must be none, api-key or oauth2")
	}
}
