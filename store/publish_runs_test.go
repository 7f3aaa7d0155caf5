package store_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/imprun/imprun-server/http/apitest"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
)

// clusterPublish is catalogPublish on a real cluster, ready to be stored.
func clusterPublish(t *testing.T, env *apitest.Env) models.ProductPublish {
	t.Helper()
	p := catalogPublish(t, env)
	r := env.As(operator).Post("/v1/operator/clusters", map[string]any{"name": "c1", "region": "r"})
	require.Equal(t, http.StatusCreated, r.Status, string(r.Body))
	p.ClusterID = uuid.MustParse(r.Map()["id"].(string))
	p.Visibility, p.Status = models.VisibilityPublic, models.PublishDraft
	return p
}

// storedPublish is a clusterPublish stored as a draft in a new env, with the env's store.
func storedPublish(t *testing.T) (*apitest.Env, *store.Store, models.ProductPublish) {
	t.Helper()
	env := apitest.New(t, apitest.Options{})
	st := env.DB.Store()
	p := clusterPublish(t, env)
	require.NoError(t, st.CreatePublish(context.Background(), &p))
	return env, st, p
}

// LockPublishRevision reads the publish with the checksum of the revision asked for, when it
// is frozen, and holds the row's lock: another transaction's lock waits until it ends.
func TestLockPublishRevision(t *testing.T) {
	t.Parallel()
	env, st, p := storedPublish(t)
	ctx := context.Background()

	_, _, _, err := st.LockPublishRevision(ctx, uuid.New(), 1)
	require.ErrorIs(t, err, store.ErrNotFound)

	got, _, frozen, err := st.LockPublishRevision(ctx, p.ID, 1)
	require.NoError(t, err)
	require.False(t, frozen, "nothing is frozen yet")
	require.Equal(t, p.ID, got.ID)
	require.Equal(t, p.Hostname, got.Hostname)
	require.Equal(t, p.APIServiceIDs, got.APIServiceIDs)

	built, err := st.BuildSnapshot(ctx, p, store.SnapshotSource{})
	require.NoError(t, err)
	require.NotEmpty(t, built.Uses)
	require.NoError(t, st.FreezeRevision(ctx, &p, &models.PublishRevision{PublishID: p.ID, Revision: 1, Snapshot: built.Bytes, Checksum: built.Checksum, CreatedBy: "t"}, built.Uses))
	require.Equal(t, models.PublishDeploying, p.Status)
	require.Equal(t, 1, p.CurrentRevision)
	stored, err := st.GetPublishByID(ctx, p.ID)
	require.NoError(t, err)
	require.Equal(t, models.PublishDeploying, stored.Status)
	require.Equal(t, 1, stored.CurrentRevision)
	require.Empty(t, stored.StatusReason)
	rev, err := st.GetRevision(ctx, p.ID, 1)
	require.NoError(t, err)
	require.Equal(t, built.Bytes, rev.Snapshot)
	require.Equal(t, "t", rev.CreatedBy)
	require.Nil(t, rev.RollbackOf)
	uses, err := st.RevisionUses(ctx, p.ID, 1)
	require.NoError(t, err)
	require.ElementsMatch(t, built.Uses, uses)
	// A revision frozen twice is refused, and the publish is left as it was.
	require.Error(t, st.FreezeRevision(ctx, &stored, &models.PublishRevision{PublishID: p.ID, Revision: 1, Snapshot: []byte("{}"), Checksum: built.Checksum}, nil))
	got, sum, frozen, err := st.LockPublishRevision(ctx, p.ID, 1)
	require.NoError(t, err)
	require.True(t, frozen)
	require.Equal(t, built.Checksum, sum)
	require.Equal(t, p.TenantID, got.TenantID)
	_, _, frozen, err = st.LockPublishRevision(ctx, p.ID, 2)
	require.NoError(t, err)
	require.False(t, frozen, "revision 2 is not frozen")

	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- st.InTx(ctx, func(ctx context.Context) error {
			if _, _, _, err := st.LockPublishRevision(ctx, p.ID, 1); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	waited := make(chan error, 1)
	go func() {
		waited <- st.InTx(ctx, func(ctx context.Context) error {
			_, err := st.LockPublish(ctx, p.ID)
			return err
		})
	}()
	require.Eventually(t, func() bool {
		var waiting int
		err := env.SQL.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting == 1
	}, 10*time.Second, 10*time.Millisecond, "the second lock waits for the first")
	select {
	case err := <-waited:
		t.Fatalf("a second lock was granted while the first was held (err %v)", err)
	default:
	}
	close(release)
	require.NoError(t, <-done)
	err = <-waited
	require.NoError(t, err)
}

// GetProduct reads a product with its services in their order, in one statement; another
// tenant's product is not found.
func TestGetProductWithLinks(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{})
	st := env.DB.Store()
	ctx := context.Background()
	p := catalogPublish(t, env)

	got, err := st.GetProduct(ctx, p.TenantID, p.ProductID)
	require.NoError(t, err)
	require.Equal(t, p.ProductID, got.ID)
	require.Equal(t, "Payments", got.Name)
	require.Equal(t, []uuid.UUID(p.APIServiceIDs), got.APIServices, "both services, in the order given")

	_, err = st.GetProduct(ctx, uuid.New(), p.ProductID)
	require.ErrorIs(t, err, store.ErrNotFound, "another tenant's product")
	_, err = st.GetProduct(ctx, p.TenantID, uuid.New())
	require.ErrorIs(t, err, store.ErrNotFound)

	// The links in the other order: the order is the stored one, not the ids'.
	r := env.As(owner).Patch("/v1/provider/products/"+p.ProductID.String(), map[string]any{
		"api_services": []string{p.APIServiceIDs[1].String(), p.APIServiceIDs[0].String()}})
	require.Equal(t, http.StatusOK, r.Status, string(r.Body))
	got, err = st.GetProduct(ctx, p.TenantID, p.ProductID)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{p.APIServiceIDs[1], p.APIServiceIDs[0]}, got.APIServices)
}

// A publish created claimed is one insert with its run and claim time, and its two events in
// order; what comes back is the row as it was before the claim.
func TestCreateClaimedPublish(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{})
	st := env.DB.Store()
	ctx := context.Background()
	p := clusterPublish(t, env)
	p.CreatedBy = "owner@acme.test"

	before, err := st.CreateClaimedPublish(ctx, &p, store.Claim{WorkflowID: "publish/x/1",
		Event: models.PublishEvent{Type: models.PublishEventPublishRequested, Revision: 1, Message: "requested"}})
	require.NoError(t, err)
	require.Nil(t, before.WorkflowID)
	require.Nil(t, before.ClaimedAt)
	require.Equal(t, models.PublishDraft, before.Status)

	var wid string
	var sinceClaim int64
	require.NoError(t, env.SQL.QueryRow(`SELECT workflow_id, (extract(epoch FROM now() - claimed_at) * 1e6)::bigint FROM product_publishes WHERE id = $1`, p.ID).
		Scan(&wid, &sinceClaim))
	require.Equal(t, "publish/x/1", wid)
	require.Less(t, time.Duration(sinceClaim)*time.Microsecond, time.Minute, "claimed now")
	require.Greater(t, time.Duration(sinceClaim)*time.Microsecond, -time.Minute)

	got, err := st.GetPublishByID(ctx, p.ID)
	require.NoError(t, err)
	require.NotNil(t, got.ClaimedAt, "read back")
	events, err := st.ListPublishEvents(ctx, p.ID)
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, models.PublishEventCreated, events[0].Type)
	require.Equal(t, models.PublishEventPublishRequested, events[1].Type)
}

// A batch of events is one statement, whatever its size: each keeps its fields (an agent or
// none, a dedupe key or none, metadata, its own time, or the statement's when it has none), and
// one whose dedupe key is taken, by an earlier batch or by the same one, is skipped.
func TestAddPublishEvents(t *testing.T) {
	t.Parallel()
	env, st, p := storedPublish(t)
	ctx := context.Background()
	var stmts []string
	st.ObserveDirect(func(q string) {
		if strings.Contains(q, "publish_events") {
			stmts = append(stmts, q)
		}
	})
	agent := uuid.New()
	key := func(k string) *string { return &k }
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	before, err := st.ListPublishEvents(ctx, p.ID)
	require.NoError(t, err)
	for _, batch := range [][]models.PublishEvent{
		{{PublishID: p.ID, Type: models.PublishEventResult, Revision: 2, AgentID: &agent, Message: "apply succeeded: ok",
			Metadata: models.JSONMap{"status": "succeeded"}, DedupeKey: key("result/a"), CreatedAt: at}},
		{
			{PublishID: p.ID, Type: models.PublishEventResult, Revision: 2, AgentID: &agent, DedupeKey: key("result/a"), Message: "taken"},
			{PublishID: p.ID, Type: models.PublishEventResult, Revision: 2, DedupeKey: key("result/b"), Message: "b", CreatedAt: at.Add(time.Second)},
			{PublishID: p.ID, Type: models.PublishEventResult, Revision: 2, DedupeKey: key("result/b"), Message: "b again"},
			{PublishID: p.ID, Type: models.PublishEventPublished, Revision: 2, Actor: "owner@acme.test"},
		},
	} {
		require.NoError(t, st.AddPublishEvents(ctx, batch))
	}
	require.Len(t, stmts, 2, "one statement a batch")
	require.Equal(t, stmts[0], stmts[1], "the same statement whatever the batch's size")

	events, err := st.ListPublishEvents(ctx, p.ID)
	require.NoError(t, err)
	require.Len(t, events, len(before)+3)
	// The timeline is in time order: a and b at their own times (an hour ago), then the
	// events of before and the published one at the statement's.
	a, b, pub := events[0], events[1], events[len(events)-1]
	require.Equal(t, "apply succeeded: ok", a.Message)
	require.Equal(t, &agent, a.AgentID)
	require.Equal(t, models.JSONMap{"status": "succeeded"}, a.Metadata)
	require.True(t, a.CreatedAt.Equal(at), "its own time: %v", a.CreatedAt)
	require.Equal(t, 2, a.Revision)
	require.Equal(t, "b", b.Message, "the first of a key in one batch wins")
	require.Nil(t, b.AgentID)
	require.True(t, b.CreatedAt.Equal(at.Add(time.Second)))
	require.Equal(t, models.PublishEventPublished, pub.Type)
	require.Equal(t, "owner@acme.test", pub.Actor)
	require.Equal(t, models.JSONMap{}, pub.Metadata)
	require.WithinDuration(t, time.Now(), pub.CreatedAt, time.Minute, "the statement's time")
	var nullKeys int
	require.NoError(t, env.SQL.QueryRow(`SELECT count(*) FROM publish_events WHERE publish_id = $1 AND dedupe_key IS NULL AND type = $2`, p.ID, models.PublishEventPublished).Scan(&nullKeys))
	require.Equal(t, 1, nullKeys, "no dedupe key is NULL, not an empty key")
}

// A tenant's slug is read once and then known (it never changes); an unknown tenant has none.
func TestTenantSlugReadOnce(t *testing.T) {
	t.Parallel()
	st, _ := newStoreAt(t)
	reads := 0
	st.ObserveDirect(func(q string) {
		if strings.Contains(q, "FROM tenants") {
			reads++
		}
	})
	ctx := context.Background()
	tn := tenant("slugged")
	require.NoError(t, st.CreateTenant(ctx, tn))
	for range 3 {
		slug, err := st.TenantSlug(ctx, tn.ID)
		require.NoError(t, err)
		require.Equal(t, "slugged", slug)
	}
	require.Equal(t, 1, reads)
	slug, err := st.TenantSlug(ctx, uuid.New())
	require.NoError(t, err)
	require.Empty(t, slug)
}
