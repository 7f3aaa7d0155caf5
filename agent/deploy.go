package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/imprun/imprun-server/proto/agentv1"
)

// maxSnapshotBytes caps a snapshot download; a publish is configuration, not data.
const maxSnapshotBytes = 32 << 20

// safeID accepts the ids the agent uses as directory names; anything else could escape the
// state directory.
var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// deploy executes a DeployCommand. It returns nil when the work was interrupted by the session
// ending, so that the command is redelivered instead of being answered FAILED.
func (a *Agent) deploy(ctx context.Context, log *slog.Logger, cmd *agentv1.DeployCommand) *agentv1.DeployResult {
	log = log.With("publish_id", cmd.GetPublishId(), "revision", cmd.GetRevision(), "action", cmd.GetAction().String())
	res := &agentv1.DeployResult{CommandId: cmd.GetCommandId(), PublishId: cmd.GetPublishId(), Revision: cmd.GetRevision()}
	var err error
	switch {
	case !safeID.MatchString(cmd.GetPublishId()):
		err = fmt.Errorf("publish_id %q is not a valid id", cmd.GetPublishId())
	case cmd.GetAction() == agentv1.DeployAction_DEPLOY_ACTION_APPLY:
		err = a.apply(ctx, log, cmd, res)
	case cmd.GetAction() == agentv1.DeployAction_DEPLOY_ACTION_WITHDRAW:
		err = a.withdraw(log, cmd, res)
	default:
		err = fmt.Errorf("unsupported deploy action %s", cmd.GetAction())
	}
	if err != nil {
		if ctx.Err() != nil {
			log.Info("deploy interrupted; the server will redeliver it", "err", err)
			return nil
		}
		log.Warn("deploy failed", "err", err)
		res.Status = agentv1.DeployStatus_DEPLOY_STATUS_FAILED
		res.Message = err.Error()
		res.AppliedResources = nil
		res.Checksum = ""
		return res
	}
	res.Status = agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED
	log.Info("deploy succeeded", "message", res.Message, "resources", len(res.AppliedResources))
	return res
}

// preparedApply is an apply command whose snapshot has been fetched, verified and rendered.
type preparedApply struct {
	snap     *Snapshot
	body     []byte // the snapshot as served, whose SHA-256 the command named
	checksum string // lowercase hex
	class    string
	renderer Renderer
	rendered *Rendered
}

// prepareApply fetches a DeployCommand's snapshot, checks it against the command and renders it.
func (a *Agent) prepareApply(ctx context.Context, log *slog.Logger, cmd *agentv1.DeployCommand) (*preparedApply, error) {
	if cmd.GetRevision() < 1 {
		return nil, fmt.Errorf("revision %d is not valid", cmd.GetRevision())
	}
	if cmd.GetChecksum() == "" {
		return nil, errors.New("command carries no checksum; refusing an unverifiable snapshot")
	}
	body, err := a.fetchSnapshot(ctx, log, cmd.GetSnapshotPath())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	got := hex.EncodeToString(sum[:])
	if !strings.EqualFold(got, cmd.GetChecksum()) {
		return nil, fmt.Errorf("snapshot checksum mismatch: the command says sha256 %s, the %d bytes served at %s hash to %s", cmd.GetChecksum(), len(body), cmd.GetSnapshotPath(), got)
	}
	snap, err := DecodeSnapshot(body)
	if err != nil {
		return nil, err
	}
	if snap.PublishID != cmd.GetPublishId() {
		return nil, fmt.Errorf("snapshot is for publish %s, the command for %s", snap.PublishID, cmd.GetPublishId())
	}
	if snap.Revision != 0 && snap.Revision != cmd.GetRevision() {
		return nil, fmt.Errorf("snapshot is revision %d, the command says %d", snap.Revision, cmd.GetRevision())
	}
	if snap.Revision == 0 {
		snap.Revision = cmd.GetRevision()
	}
	p := &preparedApply{snap: snap, body: body, checksum: got}
	if err := a.render(p); err != nil {
		return nil, err
	}
	return p, nil
}

// render renders a verified snapshot for the agent's gateway class.
func (a *Agent) render(p *preparedApply) error {
	p.class = firstNonEmpty(a.cfg.GatewayClass, p.snap.Gateway.GatewayClass, GatewayClassEnvoy)
	if a.cfg.DataPlane == DataPlaneNginx && p.class != GatewayClassNginx {
		return fmt.Errorf("this agent runs an nginx data plane; it cannot serve gateway class %s", p.class)
	}
	renderer, err := RendererFor(p.class, a.cfg.Render)
	if err != nil {
		return err
	}
	rendered, err := renderer.RenderPublish(p.snap)
	if err != nil {
		return fmt.Errorf("render for %s: %w", p.class, err)
	}
	p.renderer, p.rendered = renderer, rendered
	return nil
}

func (a *Agent) apply(ctx context.Context, log *slog.Logger, cmd *agentv1.DeployCommand, res *agentv1.DeployResult) error {
	p, err := a.prepareApply(ctx, log, cmd)
	if err != nil {
		return err
	}
	snap, rendered, renderer, class, got := p.snap, p.rendered, p.renderer, p.class, p.checksum

	dir := a.st.publishDir(snap.PublishID)
	fresh, err := makeDir(dir, false)
	if err != nil {
		return err
	}
	file := fmt.Sprintf("rev-%d.%s", cmd.GetRevision(), rendered.FileExt)
	creds, err := a.credentialsFile(snap.PublishID, renderer)
	if err != nil {
		return err
	}
	// The rendered files are derived, written without fsyncs: the applied log, fsynced, is
	// the record, and after a crash New checks them against it (checkRendered). Each file is
	// renamed into place, so a reader sees it old or new, and the revision and its
	// credentials are in place before the pointer names them.
	creds.derived = true
	if err := writeFilesAtomic(dir, stateFileMode, fileContent{name: file, data: rendered.Config, derived: true}, creds,
		fileContent{name: currentFile, data: []byte(file + "\n"), derived: true}); err != nil {
		return err
	}
	fileSum := sha256.Sum256(rendered.Config)

	prev, hadPrev := a.st.appliedPublish(snap.PublishID)
	res.AppliedResources = diffResources(prev.Resources, rendered.Resources)
	if err := a.st.setApplied(snap.PublishID, &AppliedPublish{
		PublishID:    snap.PublishID,
		Revision:     cmd.GetRevision(),
		Checksum:     strings.ToLower(got),
		GatewayClass: class,
		File:         file,
		FileSHA256:   hex.EncodeToString(fileSum[:]),
		Resources:    rendered.Resources,
		AppliedAt:    time.Now().UTC(),
	}); err != nil {
		return err
	}
	a.drift.clear(snap.PublishID)
	// Keep the previous revision's file for an operator's rollback; drop older ones (a
	// directory just created holds none).
	if !fresh {
		keep := map[string]bool{file: true, currentFile: true}
		if hadPrev {
			keep[prev.File] = true
		}
		if entries, err := os.ReadDir(dir); err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "rev-") && !keep[e.Name()] {
					_ = os.Remove(filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	res.Checksum = strings.ToLower(got)
	res.Message = fmt.Sprintf("applied revision %d for gateway class %s (%d resources)", cmd.GetRevision(), class, len(rendered.Resources))
	return nil
}

// currentFile is the pointer in a publish's directory to its applied revision's file (data
// plane files).
const currentFile = "current"

// checkRendered makes each applied publish's rendered files agree with the applied log, as
// they may not after a crash: they are written without fsyncs (apply). The current pointer and
// the credentials file are derived (from the log and the credential set) and are rewritten
// when they differ. A revision file that is missing, or whose SHA-256 is not the one the log
// recorded, can't be rebuilt without its snapshot: the publish is reported drifted in the
// agent's applied state until it is applied again, and the control plane's drift repair sends
// it again. It runs before the agent applies anything (data plane files).
func (a *Agent) checkRendered() error {
	for _, ap := range a.st.allApplied() {
		if ap.File == "" || !safeID.MatchString(ap.PublishID) {
			continue
		}
		dir := a.st.publishDir(ap.PublishID)
		body, err := os.ReadFile(filepath.Join(dir, ap.File))
		if err != nil {
			a.drift.set(ap.PublishID, "rendered file "+ap.File+" is missing")
			a.log.Warn("applied revision file missing; reported as drift for the control plane to deploy it again",
				"publish_id", ap.PublishID, "file", ap.File, "err", err)
			continue
		}
		if sum := sha256.Sum256(body); ap.FileSHA256 != "" && hex.EncodeToString(sum[:]) != ap.FileSHA256 {
			a.drift.set(ap.PublishID, "rendered file "+ap.File+" is not what was rendered")
			a.log.Warn("applied revision file changed or torn; reported as drift for the control plane to deploy it again",
				"publish_id", ap.PublishID, "file", ap.File)
			continue
		}
		var fix []fileContent
		want := ap.File + "\n"
		if got, err := os.ReadFile(filepath.Join(dir, currentFile)); err != nil || string(got) != want {
			fix = append(fix, fileContent{name: currentFile, data: []byte(want), derived: true})
		}
		if r, err := RendererFor(ap.GatewayClass, a.cfg.Render); err == nil && a.creds != nil {
			c, err := a.credentialsFile(ap.PublishID, r)
			if err != nil {
				return err
			}
			if got, err := os.ReadFile(filepath.Join(dir, c.name)); err != nil || !bytes.Equal(got, c.data) {
				c.derived = true
				fix = append(fix, c)
			}
		}
		if len(fix) == 0 {
			continue
		}
		if err := writeFilesAtomic(dir, stateFileMode, fix...); err != nil {
			return fmt.Errorf("repair %s rendered files: %w", ap.PublishID, err)
		}
		names := make([]string, len(fix))
		for i, f := range fix {
			names[i] = f.name
		}
		a.log.Info("rewrote derived files from the applied log and the credential set", "publish_id", ap.PublishID, "files", names)
	}
	return nil
}

// renderedDrift holds, per publish, why its rendered files are not what the applied log says
// (found by checkRendered), until the publish is applied or withdrawn again.
type renderedDrift struct {
	mu sync.Mutex
	m  map[string]string
}

func (d *renderedDrift) set(publishID, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]string{}
	}
	d.m[publishID] = why
}

func (d *renderedDrift) clear(publishID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, publishID)
}

// annotate sets the drift of each applied revision in rs.
func (d *renderedDrift) annotate(rs []*agentv1.AppliedRevision) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.m) == 0 {
		return
	}
	for _, r := range rs {
		r.Drift = d.m[r.GetPublishId()]
	}
}

func (a *Agent) withdraw(log *slog.Logger, cmd *agentv1.DeployCommand, res *agentv1.DeployResult) error {
	prev, ok := a.st.appliedPublish(cmd.GetPublishId())
	if err := os.RemoveAll(a.st.publishDir(cmd.GetPublishId())); err != nil {
		return fmt.Errorf("remove rendered files: %w", err)
	}
	if !ok {
		// Withdrawing what is not there is done already; answering FAILED would stall the
		// publish for no reason.
		res.Message = "publish was not applied on this agent; nothing to withdraw"
		return nil
	}
	if err := a.st.setApplied(cmd.GetPublishId(), nil); err != nil {
		return err
	}
	a.drift.clear(cmd.GetPublishId())
	for _, r := range prev.Resources {
		res.AppliedResources = append(res.AppliedResources, &agentv1.AppliedResource{
			Kind: r.Kind, Name: r.Name, Namespace: r.Namespace,
			Status: agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_DELETED,
		})
	}
	res.Message = fmt.Sprintf("withdrew revision %d (%d resources)", prev.Revision, len(prev.Resources))
	log.Info("publish withdrawn", "applied_revision", prev.Revision)
	return nil
}

// diffResources says what happened to each resource between two renderings of a publish.
func diffResources(prev, next []RenderedResource) []*agentv1.AppliedResource {
	old := make(map[string]RenderedResource, len(prev))
	for _, r := range prev {
		old[r.key()] = r
	}
	var out []*agentv1.AppliedResource
	seen := map[string]bool{}
	for _, r := range next {
		st := agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_CREATED
		if o, ok := old[r.key()]; ok {
			st = agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_UPDATED
			if o.Hash == r.Hash {
				st = agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_UNCHANGED
			}
		}
		seen[r.key()] = true
		out = append(out, &agentv1.AppliedResource{Kind: r.Kind, Name: r.Name, Namespace: r.Namespace, Status: st})
	}
	for _, r := range prev {
		if !seen[r.key()] {
			out = append(out, &agentv1.AppliedResource{Kind: r.Kind, Name: r.Name, Namespace: r.Namespace, Status: agentv1.AppliedResourceStatus_APPLIED_RESOURCE_STATUS_DELETED})
		}
	}
	return out
}

// fetchSnapshot GETs a snapshot from the API with the agent JWT. Network errors and 5xx/429
// answers are retried a few times: a snapshot that cannot be fetched fails the deploy, and a
// REST replica restarting should not be enough for that.
func (a *Agent) fetchSnapshot(ctx context.Context, log *slog.Logger, path string) ([]byte, error) {
	target, err := a.snapshotURL(path)
	if err != nil {
		return nil, err
	}
	const attempts = 3
	delay := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		body, retry, err := a.getSnapshot(ctx, target)
		if err == nil {
			return body, nil
		}
		if !retry || attempt == attempts || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("snapshot fetch failed; retrying", "err", err, "attempt", attempt)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay *= 2
	}
}

func (a *Agent) getSnapshot(ctx context.Context, target string) (body []byte, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, false, fmt.Errorf("fetch snapshot: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if id := a.currentIdentity(); id != nil {
		req.Header.Set("Authorization", "Bearer "+id.AgentJWT)
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, true, fmt.Errorf("fetch snapshot: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		detail, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return nil, retry, fmt.Errorf("fetch snapshot %s: HTTP %d: %s", req.URL.Path, resp.StatusCode, strings.TrimSpace(string(detail)))
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxSnapshotBytes+1))
	if err != nil {
		return nil, true, fmt.Errorf("fetch snapshot: read body: %w", err)
	}
	if len(body) > maxSnapshotBytes {
		return nil, false, fmt.Errorf("fetch snapshot: larger than %d bytes", maxSnapshotBytes)
	}
	return body, false, nil
}

// snapshotURL joins the API base URL and a snapshot path. Only a plain absolute path is
// accepted: the request carries the agent JWT, which must never go to another host.
func (a *Agent) snapshotURL(path string) (string, error) {
	u, err := url.Parse(path)
	if err != nil || path == "" || !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || u.Scheme != "" || u.Host != "" {
		return "", fmt.Errorf("snapshot_path %q must be an absolute path on the API", path)
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == ".." {
			return "", fmt.Errorf("snapshot_path %q must not contain '..'", path)
		}
	}
	return strings.TrimRight(a.cfg.APIBaseURL, "/") + path, nil
}
