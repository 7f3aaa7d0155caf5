package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/imprun/imprun-server/agent/nginx"
	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// The nginx tree: one site per publish holding its configuration, and one site holding the
// credential map of the whole agent (its id cannot be a publish id, which is a UUID).
const (
	nginxPublishFile     = "publish.conf"
	nginxCredentialsSite = "imprun-credentials"
	nginxCredentialsFile = "credentials.conf"
)

// nginxPlane is the agent's nginx data plane: the nginx it runs, the site of every publish that
// nginx serves, and the queue that turns bursts of deploy commands into single reloads.
//
// Deploy commands do not run on the stream's goroutine: handle queues them and returns, and one
// applier goroutine, which lives as long as Run, takes whatever queued within BatchWindow (at
// most one command per publish), fetches and renders the snapshots in parallel, makes nginx load
// the resulting tree once, and then answers every command. A DeployResult says succeeded only
// when nginx serves the revision. An answer is journaled before it is sent; when the session
// that delivered the command has ended, the server redelivers it and gets the journaled answer.
type nginxPlane struct {
	a   *Agent
	srv *nginx.Server
	err error // why there is no server (nginx missing); deploys are answered FAILED with it

	// sites is what nginx serves, by publish id. Only the applier goroutine touches it.
	sites map[string]nginx.Site

	mu         sync.Mutex
	queue      []*deployJob
	inflight   map[string]func(*agentv1.AgentMessage) error // command id -> sender of its latest delivery
	credsDirty bool
	wake       chan struct{}
}

type deployJob struct {
	cmd *agentv1.DeployCommand
	log *slog.Logger
	// span is the agent's span for the command, from submit to its answer.
	span trace.Span
}

func newNginxPlane(a *Agent) *nginxPlane {
	p := &nginxPlane{a: a, sites: map[string]nginx.Site{}, inflight: map[string]func(*agentv1.AgentMessage) error{}, wake: make(chan struct{}, 1)}
	cfg := a.cfg.Nginx
	module := ""
	switch cfg.HeadersMore {
	case "", "auto":
		module = nginx.HeadersMoreModulePath()
	case "off":
	default:
		module = cfg.HeadersMore
	}
	var listens []nginx.Listen
	for _, addr := range cfg.Listen {
		listens = append(listens, nginx.Listen{Addr: addr})
	}
	sort.Slice(listens, func(i, j int) bool { return listens[i].Addr < listens[j].Addr })
	srv, err := nginx.New(nginx.Options{Binary: cfg.Binary, Dir: cfg.Dir, WorkerProcesses: cfg.WorkerProcesses,
		ConfirmTimeout: cfg.ConfirmTimeout, HeadersMoreModule: module, Listens: listens, Logger: a.log})
	if err != nil {
		p.err = err
		a.log.Error("nginx data plane unavailable; deploys will fail until the agent is restarted with a working nginx", "err", err)
		return p
	}
	p.srv = srv
	return p
}

// start rebuilds nginx's tree from the state directory (no control plane needed) and makes
// nginx serve it: adopting a running nginx, which then serves on without a reload when the tree
// is unchanged, or starting one. Publishes nginx now refuses are dropped from the applied set.
func (p *nginxPlane) start(ctx context.Context) {
	if p.srv == nil {
		return
	}
	var sites []nginx.Site
	for _, ap := range p.a.st.allApplied() {
		site, err := p.siteFromState(ap)
		if err != nil {
			p.a.log.Error("cannot rebuild a publish from the state directory; dropping it", "publish_id", ap.PublishID, "err", err)
			_ = p.a.st.setApplied(ap.PublishID, nil)
			continue
		}
		sites = append(sites, site)
	}
	creds := p.credentialsSite()
	refused, err := p.srv.Start(ctx, append(sites, creds))
	if err != nil {
		// Keep them as the tree to serve: the next apply starts nginx with them again.
		p.a.log.Error("nginx could not load the applied publishes; the next deploy tries again", "err", err)
		for _, site := range sites {
			p.sites[site.ID] = site
		}
		return
	}
	p.sites[nginxCredentialsSite] = creds
	for _, site := range sites {
		if e, ok := refused[site.ID]; ok {
			p.a.log.Error("nginx refuses an applied publish; dropping it", "publish_id", site.ID, "err", e)
			_ = p.a.st.setApplied(site.ID, nil)
			continue
		}
		p.sites[site.ID] = site
	}
	p.a.log.Info("nginx data plane serving", "publishes", len(p.sites), "generation", p.srv.Generation(), "dir", p.srv.Dir())
}

// siteFromState renders an applied publish again from its stored snapshot.
func (p *nginxPlane) siteFromState(ap AppliedPublish) (nginx.Site, error) {
	body, err := os.ReadFile(filepath.Join(p.a.st.publishDir(ap.PublishID), ap.File))
	if err != nil {
		return nginx.Site{}, err
	}
	snap, err := DecodeSnapshot(body)
	if err != nil {
		return nginx.Site{}, err
	}
	if snap.Revision == 0 {
		snap.Revision = ap.Revision
	}
	pa := &preparedApply{snap: snap, body: body, checksum: ap.Checksum}
	if err := p.a.render(pa); err != nil {
		return nginx.Site{}, err
	}
	return p.site(pa)
}

// site is the nginx site of a rendered publish: its configuration and its credential map.
func (p *nginxPlane) site(pa *preparedApply) (nginx.Site, error) {
	site := nginx.Site{ID: pa.snap.PublishID, Files: map[string][]byte{nginxPublishFile: pa.rendered.Config}}
	for _, l := range pa.rendered.Listens {
		site.Listens = append(site.Listens, nginx.Listen{Addr: l.Addr, SSL: l.SSL})
	}
	return site, nil
}

// credentialsSite is the site of the agent's credential map, as the credential set is now.
func (p *nginxPlane) credentialsSite() nginx.Site {
	return nginx.Site{ID: nginxCredentialsSite, Files: map[string][]byte{nginxCredentialsFile: NginxCredentialMap(p.a.creds.Active(time.Now()))}}
}

// submit queues a deploy command; send answers it. A command already queued or being applied
// only gets its sender replaced (the server redelivered it on a new stream).
func (p *nginxPlane) submit(log *slog.Logger, cmd *agentv1.DeployCommand, send func(*agentv1.AgentMessage) error) {
	p.mu.Lock()
	if _, ok := p.inflight[cmd.GetCommandId()]; ok {
		p.inflight[cmd.GetCommandId()] = send
		p.mu.Unlock()
		return
	}
	p.inflight[cmd.GetCommandId()] = send
	_, span := commandSpan(context.Background(), "agent.deploy", cmd.GetTraceContext(), deployAttrs(cmd)...)
	p.queue = append(p.queue, &deployJob{cmd: cmd, log: log, span: span})
	p.mu.Unlock()
	p.kick()
}

// credentialsChanged schedules a refresh of every site's credential map.
func (p *nginxPlane) credentialsChanged() {
	p.mu.Lock()
	p.credsDirty = true
	p.mu.Unlock()
	p.kick()
}

func (p *nginxPlane) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// credentialMapDelay is how long a credential change waits for others before nginx reloads.
const credentialMapDelay = time.Second

func (p *nginxPlane) onlyCredentials() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) == 0 && p.credsDirty
}

// take removes the next batch from the queue: commands in arrival order, stopping before a
// second command for a publish already in the batch (it goes into the next batch, so that every
// command's answer is about the tree it was applied in).
func (p *nginxPlane) take() ([]*deployJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	n := 0
	for ; n < len(p.queue); n++ {
		id := p.queue[n].cmd.GetPublishId()
		if seen[id] {
			break
		}
		seen[id] = true
	}
	batch := p.queue[:n:n]
	p.queue = append([]*deployJob(nil), p.queue[n:]...)
	creds := p.credsDirty
	p.credsDirty = false
	return batch, creds
}

// run is the applier goroutine.
func (p *nginxPlane) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		// Debounce: a burst of commands arrives one stream message at a time.
		t := time.NewTimer(p.a.cfg.BatchWindow)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if p.onlyCredentials() {
			// A credential change alone is enforced by the verifier already; nginx's copy of the
			// credential maps can wait a little, so that a stream of changes costs few reloads.
			t := time.NewTimer(credentialMapDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		for ctx.Err() == nil {
			batch, creds := p.take()
			if len(batch) == 0 && !creds {
				break
			}
			p.applyBatch(ctx, batch)
		}
	}
}

// outcome is what became of one command of a batch.
type outcome struct {
	job      *deployJob
	res      *agentv1.DeployResult
	prepared *preparedApply // apply
	site     nginx.Site     // apply: the site nginx is asked to serve
	withdraw bool
	err      error
}

// applyBatch applies a batch of deploy commands (and refreshes credential maps) with one nginx
// apply, then records and sends the answers.
func (p *nginxPlane) applyBatch(ctx context.Context, batch []*deployJob) {
	outs := make([]*outcome, len(batch))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, job := range batch {
		outs[i] = &outcome{job: job, res: &agentv1.DeployResult{CommandId: job.cmd.GetCommandId(), PublishId: job.cmd.GetPublishId(), Revision: job.cmd.GetRevision()}}
		wg.Add(1)
		go func(o *outcome) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p.prepare(ctx, o)
		}(outs[i])
	}
	wg.Wait()
	if ctx.Err() != nil {
		p.forget(batch) // interrupted: the server redelivers them
		return
	}

	// The desired tree: what nginx serves, with this batch's changes and fresh credential maps.
	desired := map[string]nginx.Site{}
	for id, site := range p.sites {
		desired[id] = site
	}
	for _, o := range outs {
		switch {
		case o.err != nil:
		case o.withdraw:
			delete(desired, o.job.cmd.GetPublishId())
		default:
			desired[o.site.ID] = o.site
		}
	}
	desired[nginxCredentialsSite] = p.credentialsSite()
	list := make([]nginx.Site, 0, len(desired))
	for _, site := range desired {
		list = append(list, site)
	}

	var refused map[string]error
	var applyErr error
	if p.srv == nil {
		applyErr = fmt.Errorf("nginx data plane unavailable: %w", p.err)
	} else {
		began := time.Now()
		refused, applyErr = p.srv.Apply(ctx, list)
		p.a.metrics.reloaded(time.Since(began))
	}
	if ctx.Err() != nil && applyErr != nil {
		p.forget(batch)
		return
	}
	next := map[string]nginx.Site{}
	for _, site := range list {
		if _, bad := refused[site.ID]; !bad && applyErr == nil {
			next[site.ID] = site
		} else if cur, ok := p.sites[site.ID]; ok {
			next[site.ID] = cur
		}
	}
	if applyErr == nil {
		p.sites = next
	}

	for _, o := range outs {
		id := o.job.cmd.GetPublishId()
		switch {
		case o.err != nil:
		case applyErr != nil:
			o.err = applyErr
		case refused[id] != nil:
			o.err = refused[id]
		default:
			o.err = p.commit(o)
		}
		p.answer(o)
	}
}

// prepare validates a command and, for an apply, fetches and renders its snapshot.
func (p *nginxPlane) prepare(ctx context.Context, o *outcome) {
	cmd := o.job.cmd
	switch {
	case !safeID.MatchString(cmd.GetPublishId()):
		o.err = fmt.Errorf("publish_id %q is not a valid id", cmd.GetPublishId())
	case cmd.GetAction() == agentv1.DeployAction_DEPLOY_ACTION_WITHDRAW:
		o.withdraw = true
	case cmd.GetAction() == agentv1.DeployAction_DEPLOY_ACTION_APPLY:
		pa, err := p.a.prepareApply(ctx, o.job.log, cmd)
		if err != nil {
			o.err = err
			return
		}
		site, err := p.site(pa)
		if err != nil {
			o.err = err
			return
		}
		o.prepared, o.site = pa, site
	default:
		o.err = fmt.Errorf("unsupported deploy action %s", cmd.GetAction())
	}
}

// commit records in the state directory what nginx now serves for a command's publish.
func (p *nginxPlane) commit(o *outcome) error {
	cmd := o.job.cmd
	id := cmd.GetPublishId()
	prev, hadPrev := p.a.st.appliedPublish(id)
	if o.withdraw {
		if err := os.RemoveAll(p.a.st.publishDir(id)); err != nil {
			return fmt.Errorf("remove publish state: %w", err)
		}
		if !hadPrev {
			o.res.Message = "publish was not applied on this agent; nothing to withdraw"
			return nil
		}
		if err := p.a.st.setApplied(id, nil); err != nil {
			return err
		}
		for _, r := range prev.Resources {
			o.res.AppliedResources = append(o.res.AppliedResources, &agentv1.AppliedResource{Kind: r.Kind, Name: r.Name, Namespace: r.Namespace,
				Status: agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_DELETED})
		}
		o.res.Message = fmt.Sprintf("withdrew revision %d from nginx (generation %s)", prev.Revision, p.srv.Generation())
		return nil
	}
	pa := o.prepared
	dir := p.a.st.publishDir(id)
	if err := ensurePrivateDir(dir); err != nil {
		return err
	}
	file := fmt.Sprintf("snapshot-rev-%d.json", cmd.GetRevision())
	if err := writeFileAtomic(filepath.Join(dir, file), pa.body, stateFileMode); err != nil {
		return err
	}
	o.res.AppliedResources = diffResources(prev.Resources, pa.rendered.Resources)
	if err := p.a.st.setApplied(id, &AppliedPublish{PublishID: id, Revision: cmd.GetRevision(), Checksum: strings.ToLower(pa.checksum),
		GatewayClass: pa.class, File: file, Resources: pa.rendered.Resources, AppliedAt: time.Now().UTC()}); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if e.Name() != file && (!hadPrev || e.Name() != prev.File) && strings.HasPrefix(e.Name(), "snapshot-rev-") {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	o.res.Checksum = strings.ToLower(pa.checksum)
	o.res.Message = fmt.Sprintf("nginx serves revision %d (generation %s, %d resources)", cmd.GetRevision(), p.srv.Generation(), len(pa.rendered.Resources))
	return nil
}

// answer journals a command's result and sends it on the stream of its latest delivery.
func (p *nginxPlane) answer(o *outcome) {
	log := o.job.log
	if o.err != nil {
		var se *nginx.SiteError
		if errors.As(o.err, &se) {
			log = log.With("step", se.Step)
		}
		log.Warn("deploy failed", "err", o.err)
		o.res.Status = agentv1.DeployStatus_DEPLOY_STATUS_FAILED
		o.res.Message = o.err.Error()
		o.res.AppliedResources, o.res.Checksum = nil, ""
	} else {
		o.res.Status = agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED
		log.Info("deploy succeeded", "message", o.res.Message)
	}
	finishDeploySpan(o.job.span, o.res)
	p.a.metrics.deployed(o.res)
	reply := &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_DeployResult{DeployResult: o.res}}
	id := o.job.cmd.GetCommandId()
	if id != "" {
		if err := p.a.st.record(id, reply); err != nil {
			log.Error("record command answer", "err", err)
		}
	}
	p.mu.Lock()
	send := p.inflight[id]
	delete(p.inflight, id)
	p.mu.Unlock()
	if send != nil {
		if err := send(reply); err != nil {
			log.Info("deploy answered after its stream ended; the server will redeliver the command and get this answer", "err", err)
		}
	}
}

// forget drops interrupted commands from the in-flight set, unanswered.
func (p *nginxPlane) forget(batch []*deployJob) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range batch {
		j.span.End() // interrupted; the redelivery gets a span of its own
		delete(p.inflight, j.cmd.GetCommandId())
	}
}
