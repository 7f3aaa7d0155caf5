package agentgw

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/store"
	"github.com/imprun/imprun-server/temporalclient"
	"github.com/imprun/imprun-server/workflows"
)

// TemporalSink passes agent results on to the workflows waiting for them as signals, and
// records on the publish's timeline what arrives for a run that has already ended (a second
// agent of the cluster answering late; a failure after PUBLISHED marks the publish degraded).
type TemporalSink struct {
	Temporal *temporalclient.Holder
	Store    *store.Store
	// Decided remembers the deploy commands whose first result this replica has passed on;
	// nil signals every result. See DecidedCommands.
	Decided *DecidedCommands
}

// DecidedCommands is the set of deploy and credential commands whose run this replica has
// already signalled a deciding result to. A cluster's agents are replicas and all answer the same command, but the run
// ends on the first result: signalling the others made the run's last workflow task fail
// (an unhandled signal) and run again, or cost a signal to a closed run, per agent per
// publish. So a later success of the same command is kept only as its row and timeline event.
// A later failure is still signalled: when the run has ended that finds it and marks the
// publish degraded. The set is per replica, so agents of one cluster on several replicas
// cost at most one extra signal per replica; entries are forgotten after decidedTTL.
type DecidedCommands struct {
	mu   sync.Mutex
	at   map[uuid.UUID]time.Time
	next time.Time // when to prune next
}

// decidedTTL bounds how long a decided command is remembered: agents answer a command within
// seconds of each other, and a straggler after that is merely signalled as before.
const decidedTTL = 10 * time.Minute

// NewDecidedCommands returns an empty set.
func NewDecidedCommands() *DecidedCommands { return &DecidedCommands{at: map[uuid.UUID]time.Time{}} }

// claim reports whether the caller is the first to pass on a result of command id (and makes
// it so): the claim is taken before the signal is sent, so results of the other agents that
// arrive while it is in flight are not signalled either. A nil set lets every caller pass.
func (d *DecidedCommands) claim(id uuid.UUID) bool {
	if d == nil {
		return true
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.at[id]; ok {
		return false
	}
	d.at[id] = now
	if now.After(d.next) {
		for k, t := range d.at {
			if now.Sub(t) > decidedTTL {
				delete(d.at, k)
			}
		}
		d.next = now.Add(decidedTTL / 10)
	}
	return true
}

// has reports whether a result of command id has been passed on as its decision.
func (d *DecidedCommands) has(id uuid.UUID) bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.at[id]
	return ok
}

// release gives a claim back (its signal failed; the sweeper passes the result on again).
func (d *DecidedCommands) release(id uuid.UUID) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.at, id)
}

// PassOn implements ResultSink.
func (s TemporalSink) PassOn(ctx context.Context, r store.UnpassedResult) error {
	switch r.Kind {
	case models.CommandDeploy:
		return s.deployResult(ctx, r)
	case models.CommandCredentialUpsert, models.CommandCredentialRevoke:
		return s.credentialAck(ctx, r)
	}
	return nil
}

// Settled implements resultSettler: a credential acknowledgement of a command whose success
// this replica has signalled already is not signalled (credentialAck), so it needs no passing
// on. Deploy results always do: each is an event on the publish's timeline.
func (s TemporalSink) Settled(r store.UnpassedResult) bool {
	switch r.Kind {
	case models.CommandCredentialUpsert, models.CommandCredentialRevoke:
		return s.Decided.has(r.CommandID)
	}
	return false
}

// resultEvent is the timeline event of a deploy result; false for a result this sink does
// not understand (nothing to record or retry).
func resultEvent(r store.UnpassedResult) (models.PublishEvent, models.DeployPayload, bool) {
	p, err := models.DeployPayloadOf(r.Payload)
	if err != nil {
		return models.PublishEvent{}, p, false
	}
	pid, err := uuid.Parse(p.PublishID)
	if err != nil {
		return models.PublishEvent{}, p, false
	}
	msg, _ := r.Result["message"].(string)
	checksum, _ := r.Result["checksum"].(string)
	agentID := r.AgentID
	key := "result/" + r.CommandID.String() + "/" + r.AgentID.String()
	return models.PublishEvent{PublishID: pid, Type: models.PublishEventResult, Revision: p.Revision,
		AgentID: &agentID, Message: models.Cut(fmt.Sprintf("%s %s: %s", p.Action, r.ResultStatus, msg), 2000), DedupeKey: &key,
		Metadata: models.JSONMap{"command_id": r.CommandID.String(), "status": r.ResultStatus, "checksum": checksum, "action": p.Action}}, p, true
}

// RecordResults writes the timeline events of a batch's deploy results in one statement, so
// that the agents of a cluster answering one publish cost one insert, not one each. When it
// fails (a publish deleted meanwhile, whose events the foreign key refuses), PassOn writes
// each result's event itself.
func (s TemporalSink) RecordResults(ctx context.Context, rs []store.UnpassedResult) error {
	var events []models.PublishEvent
	for _, r := range rs {
		if r.Kind != models.CommandDeploy {
			continue
		}
		if e, _, ok := resultEvent(r); ok {
			events = append(events, e)
		}
	}
	return s.Store.AddPublishEvents(ctx, events)
}

func (s TemporalSink) deployResult(ctx context.Context, r store.UnpassedResult) error {
	ev, p, ok := resultEvent(r)
	if !ok {
		return nil // not a command this sink understands; nothing to retry
	}
	pid, agentID, key := ev.PublishID, r.AgentID, *ev.DedupeKey
	msg, _ := r.Result["message"].(string)
	checksum, _ := r.Result["checksum"].(string)
	if !r.Recorded {
		if err := s.Store.AddPublishEvent(ctx, &ev); err != nil {
			if store.IsForeignKeyViolation(err) {
				return nil // the publish was deleted
			}
			return err
		}
	}
	if !s.Decided.claim(r.CommandID) && r.ResultStatus != "failed" {
		return nil // the first result decided the run; this one is its row and event
	}
	c, err := s.Temporal.Client()
	if err != nil {
		s.Decided.release(r.CommandID)
		return err // the sweeper retries once Temporal is reachable
	}
	wid := workflows.PublishWorkflowID(p.PublishID, p.Revision)
	if p.Action == models.DeployWithdraw {
		wid = workflows.WithdrawWorkflowID(p.PublishID, p.Revision)
	}
	err = c.SignalWorkflow(ctx, wid, "", workflows.SignalDeployResult, workflows.DeployResultSignal{
		CommandID: r.CommandID.String(), AgentID: r.AgentID.String(), Status: r.ResultStatus, Message: msg, Checksum: checksum, Revision: p.Revision})
	var nf *serviceerror.NotFound
	if err != nil && !errors.As(err, &nf) {
		s.Decided.release(r.CommandID)
	}
	if errors.As(err, &nf) {
		// The run has ended: the first result decided it. A later failure of another agent of
		// a PUBLISHED revision is not ignored: the publish is marked degraded on its timeline.
		pub, gerr := s.Store.GetPublishByID(ctx, pid)
		if gerr == nil && r.ResultStatus == "failed" && p.Action == models.DeployApply &&
			pub.Status == models.PublishPublished && pub.CurrentRevision == p.Revision {
			dkey := "degraded/" + key
			return s.Store.AddPublishEvent(ctx, &models.PublishEvent{PublishID: pid, Type: models.PublishEventDegraded, Revision: p.Revision,
				AgentID: &agentID, Message: models.Cut("an agent failed to apply the published revision: "+msg, 2000), DedupeKey: &dkey})
		}
		return nil
	}
	return err
}

// credentialAck signals the rollout of the credential version the command carried. A run that
// has ended (a newer version replaced it) needs nothing more.
func (s TemporalSink) credentialAck(ctx context.Context, r store.UnpassedResult) error {
	var p struct {
		CredentialID string `json:"credential_id"`
		Version      int64  `json:"version"`
	}
	if err := models.FromJSONMap(r.Payload, &p); err != nil || p.CredentialID == "" {
		return nil
	}
	success, _ := r.Result["success"].(bool)
	// A cluster is confirmed by its first successful acknowledgement, and the run ignores
	// what its other agents say after it: signalling each of them cost the run a history
	// event and a workflow task per agent (10,000 agents of one cluster, 10,000 signals per
	// credential change). Once this replica has signalled a success of the command, the
	// later acknowledgements are their delivery rows only; a failure before it is still
	// signalled, for the cluster's last message.
	if success {
		if !s.Decided.claim(r.CommandID) {
			return nil
		}
	} else if s.Decided.has(r.CommandID) {
		return nil
	}
	c, err := s.Temporal.Client()
	if err != nil {
		if success {
			s.Decided.release(r.CommandID)
		}
		return err
	}
	msg, _ := r.Result["message"].(string)
	err = c.SignalWorkflow(ctx, workflows.CredentialSyncWorkflowID(p.CredentialID, p.Version), "", workflows.SignalCredentialAck,
		workflows.CredentialAck{CommandID: r.CommandID.String(), ClusterID: r.ClusterID.String(), AgentID: r.AgentID.String(), Success: success, Message: msg})
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil && success {
		s.Decided.release(r.CommandID) // the sweeper passes it on again
	}
	return err
}
