package http_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/store/storetest"
)

// The marketplace's rows of the one RBAC walk: anyone reads /v1/public; /v1/customer/catalog
// needs a customer membership; invitations need provider owner/admin to write.
func init() { moduleRBACCasesFns = append(moduleRBACCasesFns, marketplaceRBACCases) }

func marketplaceRBACCases(w *world) []rbacCase {
	m := newMarket(w.env.T, w)
	prod := m.product(w.env.T, "RBAC market", "", nil)
	pub := m.publish(w.env.T, prod, "prod", "private", models.PublishPublished, time.Now())
	inv := prov + "/product-publishes/" + pub + "/invitations"
	return []rbacCase{
		{"anonymous", "GET", "/v1/public/products", nil, 200},
		{"user", "GET", "/v1/public/products", nil, 200},
		{"anonymous", "GET", "/v1/public/products/" + pub, nil, 404},
		{"anonymous", "GET", "/v1/customer/catalog", nil, 401},
		{"user", "GET", "/v1/customer/catalog", nil, 403},
		{"owner", "GET", "/v1/customer/catalog", nil, 403},
		{"viewer", "GET", "/v1/customer/catalog", nil, 403},
		{"customer-owner", "GET", "/v1/customer/catalog", nil, 200},
		{"customer-owner", "GET", "/v1/customer/catalog/" + pub, nil, 404},
		{"customer-owner", "GET", inv, nil, 403},
		{"customer-owner", "POST", inv, map[string]any{"tenant_slug": "globex"}, 403},
		{"viewer", "GET", inv, nil, 200},
		{"viewer", "POST", inv, map[string]any{"tenant_slug": "globex"}, 403},
		{"developer", "POST", inv, map[string]any{"tenant_slug": "globex"}, 403},
		{"tenant-admin", "POST", inv, map[string]any{"tenant_slug": "globex"}, 201},
		{"customer-owner", "GET", "/v1/customer/catalog/" + pub, nil, 200},
		{"developer", "DELETE", inv + "/" + w.globex.ID.String(), nil, 403},
		{"owner", "DELETE", inv + "/" + w.globex.ID.String(), nil, 204},
	}
}

// market makes products and publishes of acme for the marketplace tests: the catalog rows
// through the API, the cluster and the publish rows (which only workflows move to PUBLISHED)
// with SQL.
type market struct {
	w       *world
	cluster string
	gateway string
	service string
	n       int
}

func newMarket(t testing.TB, w *world) *market {
	t.Helper()
	owner := w.env.As(ownerP)
	m := &market{w: w}
	m.cluster = w.env.DB.InsertCluster(t, "mk-"+uuid.NewString()[:8], "eu-west", `{"gateway_classes": [{"name": "envoy-gateway"}]}`)
	m.gateway = idOf(created(t, owner, prov+"/gateways", gatewayBody("mk-gw-"+uuid.NewString()[:8])))
	m.service = newServiceFixture(t, owner, "mk-"+uuid.NewString()[:8]).service
	return m
}

// product creates a product of acme with a free plan (no quota) and a gold plan.
func (m *market) product(t testing.TB, name, description string, categories []string) string {
	t.Helper()
	owner := m.w.env.As(ownerP)
	if categories == nil {
		categories = []string{}
	}
	id := idOf(created(t, owner, prov+"/products", map[string]any{"name": name, "version": "1.2.0", "description": description,
		"categories": categories, "docs_url": "https://docs.example.com/" + url.PathEscape(name), "logo_url": "https://img.example.com/logo.png",
		"api_services": []string{m.service}}))
	created(t, owner, prov+"/products/"+id+"/plans", map[string]any{"name": "Free", "description": "to try",
		"rate_limit": map[string]any{"requests": 10, "period": "minute"}})
	created(t, owner, prov+"/products/"+id+"/plans", map[string]any{"name": "Gold",
		"rate_limit": map[string]any{"requests": 100, "period": "second"}, "quota": map[string]any{"requests": 1000000, "period": "month"}})
	return id
}

// publish inserts a publish of product; publishedAt is stored unless status is DRAFT.
func (m *market) publish(t testing.TB, product, env, visibility, status string, publishedAt time.Time) string {
	t.Helper()
	m.n++
	at := publishedAt.UTC().Truncate(time.Microsecond)
	row := storetest.PublishRow{TenantID: m.w.acme.ID, ProductID: product, GatewayID: m.gateway, ClusterID: m.cluster, APIServiceID: m.service,
		Environment: env, Hostname: fmt.Sprintf("api%d-%s.example.com", m.n, env), Visibility: visibility, Status: status, PublishedAt: &at}
	if status == models.PublishDraft {
		row.PublishedAt = nil
	}
	return m.w.env.DB.InsertPublish(t, row)
}

type marketPage struct {
	Items      []store.MarketItem `json:"items"`
	NextCursor *string            `json:"next_cursor"`
}

func marketList(t *testing.T, c *apitest.Client, path string) marketPage {
	t.Helper()
	r := c.Get(path)
	require.Equal(t, http.StatusOK, r.Status, "GET %s: %s", path, r.Body)
	var p marketPage
	r.JSON(&p)
	return p
}

func marketIDs(p marketPage) []string {
	out := []string{}
	for _, it := range p.Items {
		out = append(out, it.ID.String())
	}
	return out
}

func TestMarketplaceListing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := newMarket(t, w)
	now := time.Now()
	payments := m.product(t, "Payments API", "Move money between accounts", []string{"Finance", "Payments"})
	weather := m.product(t, "Weather", "Forecasts by city", []string{"Data"})
	maps := m.product(t, "Maps", "Geocoding, 100% offline_ready", []string{"data", "Geo"})
	p1 := m.publish(t, payments, "prod", "public", models.PublishPublished, now.Add(-3*time.Hour))
	p2 := m.publish(t, weather, "dev", "public", models.PublishPublished, now.Add(-2*time.Hour))
	p3 := m.publish(t, maps, "prod", "public", models.PublishPublished, now.Add(-time.Hour))
	private := m.publish(t, payments, "stage", "private", models.PublishPublished, now)
	draft := m.publish(t, weather, "prod", "public", models.PublishDraft, now)
	withdrawn := m.publish(t, maps, "stage", "public", models.PublishWithdrawn, now.Add(-4*time.Hour))
	deploying := m.publish(t, maps, "dev", "public", models.PublishDeploying, now.Add(-5*time.Hour))
	anon := w.env.Anonymous()

	all := marketList(t, anon, "/v1/public/products")
	require.Equal(t, []string{p3, p2, p1}, marketIDs(all), "published and public only, newest published first")
	require.Nil(t, all.NextCursor)
	it := all.Items[2]
	require.Equal(t, payments, it.Product.ID.String())
	require.Equal(t, "Payments API", it.Product.Name)
	require.Equal(t, "1.2.0", it.Product.Version)
	require.Equal(t, "Move money between accounts", it.Product.Description)
	require.Equal(t, models.StringArray{"Finance", "Payments"}, it.Product.Categories)
	require.Equal(t, "https://docs.example.com/Payments%20API", it.Product.DocsURL)
	require.Equal(t, "https://img.example.com/logo.png", it.Product.LogoURL)
	require.Equal(t, "Acme", it.Provider.Name)
	require.Equal(t, "prod", it.Environment)
	require.Equal(t, "api1-prod.example.com", it.Hostname)
	require.Equal(t, "public", it.Visibility)
	require.WithinDuration(t, now.Add(-3*time.Hour), it.PublishedAt, time.Millisecond)
	require.Len(t, it.Plans, 2)
	require.Equal(t, "Free", it.Plans[0].Name)
	require.Equal(t, "to try", it.Plans[0].Description)
	require.Equal(t, models.PlanRateLimit{Requests: 10, Period: "minute"}, it.Plans[0].RateLimit.V)
	require.Nil(t, it.Plans[0].Quota.V)
	require.Equal(t, "Gold", it.Plans[1].Name)
	require.Equal(t, &models.PlanQuota{Requests: 1000000, Period: "month"}, it.Plans[1].Quota.V)

	// Search, category and environment filters.
	for q, want := range map[string][]string{
		"q=pay":                             {p1},
		"q=PAYMENTS":                        {p1},
		"q=forecast":                        {p2},
		"q=%25":                             {p3}, // a literal %, not a wildcard
		"q=_":                               {p3}, // a literal _, not a wildcard
		"q=nothing-like-this":               {},
		"category=data":                     {p3, p2},
		"category=GEO":                      {p3},
		"category=Payments":                 {p1},
		"category=Dat":                      {},
		"environment=prod":                  {p3, p1},
		"environment=stage":                 {},
		"q=a&category=data&environment=dev": {p2},
		"q=geocoding&category=geo&environment=prod": {p3},
	} {
		require.Equal(t, want, marketIDs(marketList(t, anon, "/v1/public/products?"+q)), q)
	}
	requireProblem(t, anon.Get("/v1/public/products?environment=moon"), 400, "invalid_query", "environment")
	requireProblem(t, anon.Get("/v1/public/products?limit=0"), 400, "invalid_query", "limit")
	requireProblem(t, anon.Get("/v1/public/products?cursor=garbage"), 400, "invalid_query", "cursor")
	long := make([]byte, 201)
	for i := range long {
		long[i] = 'a'
	}
	requireProblem(t, anon.Get("/v1/public/products?q="+string(long)), 400, "invalid_query", "q")

	// Keyset pagination on (published_at, id).
	page1 := marketList(t, anon, "/v1/public/products?limit=2")
	require.Equal(t, []string{p3, p2}, marketIDs(page1))
	require.NotNil(t, page1.NextCursor)
	page2 := marketList(t, anon, "/v1/public/products?limit=2&cursor="+*page1.NextCursor)
	require.Equal(t, []string{p1}, marketIDs(page2))
	require.Nil(t, page2.NextCursor)
	page1 = marketList(t, anon, "/v1/public/products?limit=1&environment=prod")
	require.Equal(t, []string{p3}, marketIDs(page1))
	page2 = marketList(t, anon, "/v1/public/products?limit=1&environment=prod&cursor="+*page1.NextCursor)
	require.Equal(t, []string{p1}, marketIDs(page2), "filters apply on every page")

	// The detail.
	r := anon.Get("/v1/public/products/" + p1)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var one store.MarketItem
	r.JSON(&one)
	require.Equal(t, it.Product, one.Product)
	require.Len(t, one.Plans, 2)
	for name, id := range map[string]string{"private": private, "draft": draft, "withdrawn": withdrawn, "deploying": deploying, "unknown": uuid.NewString()} {
		requireProblem(t, anon.Get("/v1/public/products/"+id), 404, "not_found", "", name)
	}
	requireProblem(t, anon.Get("/v1/public/products/not-a-uuid"), 400, "invalid_id", "id")

	// A customer sees the same public items (it is invited nowhere).
	require.Equal(t, []string{p3, p2, p1}, marketIDs(marketList(t, w.env.As(custOwner), "/v1/customer/catalog")))
	require.Equal(t, []string{p2}, marketIDs(marketList(t, w.env.As(custOwner), "/v1/customer/catalog?q=weather")))

	// A suspended provider's publishes leave the marketplace.
	ops := w.env.As(opsP)
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+w.acme.ID.String()+"/suspend", nil).Status)
	require.Empty(t, marketIDs(marketList(t, anon, "/v1/public/products")))
	requireProblem(t, anon.Get("/v1/public/products/"+p1), 404, "not_found", "")
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+w.acme.ID.String()+"/activate", nil).Status)
	require.Len(t, marketList(t, anon, "/v1/public/products").Items, 3)
}

// Publishes with the same published_at are ordered by id and none is skipped or repeated.
func TestMarketplacePaginationTies(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := newMarket(t, w)
	prod := m.product(t, "Ties", "", nil)
	at := time.Now().Add(-time.Minute)
	want := map[string]bool{}
	for range 7 {
		want[m.publish(t, prod, "dev", "public", models.PublishPublished, at)] = true
	}
	seen := map[string]bool{}
	path := "/v1/public/products?limit=3"
	pages := 0
	for {
		p := marketList(t, w.env.Anonymous(), path)
		pages++
		for _, id := range marketIDs(p) {
			require.False(t, seen[id], "repeated %s", id)
			seen[id] = true
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/public/products?limit=3&cursor=" + *p.NextCursor
	}
	require.Equal(t, want, seen)
	require.Equal(t, 3, pages)
}

func TestPrivatePublishInvitations(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	m := newMarket(t, w)
	ops := w.env.As(opsP)
	hooliOwner := apitest.Persona{Email: "owner@hooli.test"}
	created(t, ops, "/v1/operator/tenants", map[string]any{"slug": "hooli", "name": "Hooli", "type": "customer", "owner_email": hooliOwner.Email})
	initech := created(t, ops, "/v1/operator/tenants", map[string]any{"slug": "initech", "name": "Initech", "type": "customer"})
	require.Equal(t, http.StatusOK, ops.Post("/v1/operator/tenants/"+idOf(initech)+"/suspend", nil).Status)
	umbrellaOwner := apitest.Persona{Email: "owner@umbrella.test"}
	created(t, ops, "/v1/operator/tenants", map[string]any{"slug": "umbrella", "name": "Umbrella", "type": "provider", "owner_email": umbrellaOwner.Email})

	secret := m.product(t, "Secret API", "Only for partners", []string{"Partners"})
	open := m.product(t, "Open API", "For everyone", nil)
	priv := m.publish(t, secret, "prod", "private", models.PublishPublished, time.Now().Add(-time.Minute))
	pub := m.publish(t, open, "prod", "public", models.PublishPublished, time.Now().Add(-2*time.Minute))
	pubDraft := m.publish(t, open, "dev", "public", models.PublishDraft, time.Time{})
	privWithdrawn := m.publish(t, secret, "dev", "private", models.PublishWithdrawn, time.Now())

	anon := w.env.Anonymous()
	globex := w.env.As(custOwner)
	hooli := w.env.As(hooliOwner)
	owner := w.env.As(ownerP)
	invitations := prov + "/product-publishes/" + priv + "/invitations"

	visible := func(publish string, tenant uuid.UUID) bool {
		_, err := w.env.Store.PublishVisibleTo(ctx, uuid.MustParse(publish), tenant)
		if err != nil {
			require.ErrorIs(t, err, store.ErrNotFound)
			return false
		}
		return true
	}

	// Before any invitation: nobody sees the private publish.
	require.Equal(t, []string{pub}, marketIDs(marketList(t, anon, "/v1/public/products")))
	require.Equal(t, []string{pub}, marketIDs(marketList(t, globex, "/v1/customer/catalog")))
	requireProblem(t, globex.Get("/v1/customer/catalog/"+priv), 404, "not_found", "")
	require.False(t, visible(priv, w.globex.ID))
	require.True(t, visible(pub, w.globex.ID), "public and published")
	require.False(t, visible(pubDraft, w.globex.ID), "a draft is not visible")
	require.False(t, visible(uuid.NewString(), w.globex.ID))

	// Bad invitations.
	for slug, why := range map[string]string{"": "missing", "No Such": "malformed", "no-such": "unknown", "acme": "a provider", "initech": "suspended"} {
		requireProblem(t, owner.Post(invitations, map[string]any{"tenant_slug": slug}), 422, "validation_failed", "tenant_slug", why)
	}
	requireProblem(t, owner.Post(invitations, map[string]any{"tenant": "globex"}), 400, "unknown_field", "tenant")
	requireProblem(t, owner.Post(prov+"/product-publishes/"+uuid.NewString()+"/invitations", map[string]any{"tenant_slug": "globex"}), 404, "not_found", "")
	requireProblem(t, w.env.As(umbrellaOwner).Post(invitations, map[string]any{"tenant_slug": "globex"}), 404, "not_found", "", "another provider's publish")
	requireProblem(t, w.env.As(umbrellaOwner).Get(invitations), 404, "not_found", "")

	// Invite globex.
	r := owner.Post(invitations, map[string]any{"tenant_slug": "globex"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	var inv store.Invitation
	r.JSON(&inv)
	require.Equal(t, priv, inv.PublishID.String())
	require.Equal(t, w.globex.ID, inv.CustomerTenantID)
	require.Equal(t, "globex", inv.TenantSlug)
	require.Equal(t, "Globex", inv.TenantName)
	require.Equal(t, ownerP.Email, inv.InvitedBy)
	requireProblem(t, owner.Post(invitations, map[string]any{"tenant_slug": "globex"}), 409, "already_invited", "")
	// An invitation to a withdrawn private publish shows nothing until it is published again.
	created(t, owner, prov+"/product-publishes/"+privWithdrawn+"/invitations", map[string]any{"tenant_slug": "globex"})

	list := listItems(t, w.env.As(viewerP), invitations)
	require.Len(t, list, 1)
	require.Equal(t, "globex", list[0]["tenant_slug"])

	// globex sees it now, with its plans; anonymous and hooli still don't.
	require.Equal(t, []string{priv, pub}, marketIDs(marketList(t, globex, "/v1/customer/catalog")))
	require.Equal(t, []string{priv}, marketIDs(marketList(t, globex, "/v1/customer/catalog?category=partners")))
	r = globex.Get("/v1/customer/catalog/" + priv)
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	var item store.MarketItem
	r.JSON(&item)
	require.Equal(t, "private", item.Visibility)
	require.Equal(t, "Secret API", item.Product.Name)
	require.Len(t, item.Plans, 2)
	require.True(t, visible(priv, w.globex.ID))
	require.False(t, visible(privWithdrawn, w.globex.ID), "invited but withdrawn")
	requireProblem(t, anon.Get("/v1/public/products/"+priv), 404, "not_found", "")
	require.Equal(t, []string{pub}, marketIDs(marketList(t, anon, "/v1/public/products")))
	require.Equal(t, []string{pub}, marketIDs(marketList(t, hooli, "/v1/customer/catalog")))
	requireProblem(t, hooli.Get("/v1/customer/catalog/"+priv), 404, "not_found", "")
	hooliID := uuid.MustParse(tenantID(t, w, "hooli"))
	require.False(t, visible(priv, hooliID))

	// Withdrawing the invitation hides it again.
	del := invitations + "/" + w.globex.ID.String()
	require.Equal(t, http.StatusNoContent, owner.Delete(del).Status)
	requireProblem(t, owner.Delete(del), 404, "not_found", "")
	requireProblem(t, owner.Delete(invitations+"/not-a-uuid"), 400, "invalid_id", "tenant_id")
	require.Empty(t, listItems(t, owner, invitations))
	require.Equal(t, []string{pub}, marketIDs(marketList(t, globex, "/v1/customer/catalog")))
	requireProblem(t, globex.Get("/v1/customer/catalog/"+priv), 404, "not_found", "")
	require.False(t, visible(priv, w.globex.ID))

	var actions []string
	for _, a := range auditActions(t, w, "publish_invitation") {
		actions = append(actions, a.Action)
		require.Equal(t, "globex", a.ResourceName)
	}
	require.Equal(t, []string{"invitation.create", "invitation.create", "invitation.delete"}, actions)
}

// Invitation lists page like every other list.
func TestInvitationPagination(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	m := newMarket(t, w)
	ops := w.env.As(opsP)
	prod := m.product(t, "Paged", "", nil)
	priv := m.publish(t, prod, "prod", "private", models.PublishPublished, time.Now())
	path := prov + "/product-publishes/" + priv + "/invitations"
	owner := w.env.As(ownerP)
	want := []string{"globex"}
	for i := range 4 {
		slug := fmt.Sprintf("cust%d", i)
		created(t, ops, "/v1/operator/tenants", map[string]any{"slug": slug, "name": slug, "type": "customer"})
		want = append(want, slug)
	}
	for _, slug := range want {
		created(t, owner, path, map[string]any{"tenant_slug": slug})
	}
	var got []string
	next := ""
	for {
		p := path + "?limit=2"
		if next != "" {
			p += "&cursor=" + next
		}
		r := owner.Get(p)
		require.Equal(t, http.StatusOK, r.Status)
		var page struct {
			Items      []store.Invitation `json:"items"`
			NextCursor *string            `json:"next_cursor"`
		}
		r.JSON(&page)
		for _, it := range page.Items {
			got = append(got, it.TenantSlug)
		}
		if page.NextCursor == nil {
			break
		}
		next = *page.NextCursor
	}
	require.ElementsMatch(t, want, got)
	require.Len(t, got, len(want))
}

func tenantID(t *testing.T, w *world, slug string) string {
	t.Helper()
	return w.env.DB.TenantID(t, slug)
}
