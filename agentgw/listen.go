package agentgw

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/proto/agentv1"
	"github.com/imprun/imprun-server/retry"
	"github.com/imprun/imprun-server/store"
)

// listen holds a LISTEN connection for the outbox and agent-control channels and acts on
// every notification. When the connection drops it reconnects with backoff and re-reads the
// outbox for every local stream, since notifications sent meanwhile are gone.
func (g *Gateway) listen(ctx context.Context) {
	bo := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	first := true
	for ctx.Err() == nil {
		l, err := store.Listen(ctx, g.cfg.DatabaseURL, store.AgentCommandChannel, store.AgentControlChannel)
		if err != nil {
			wait := bo.Next()
			if ctx.Err() == nil {
				g.log.Warn("agent gateway LISTEN failed; retrying", "backoff", wait, "err", err)
			}
			retry.Sleep(ctx, wait)
			continue
		}
		bo.Reset()
		g.tokens.setLive(true)
		g.commandSeq.Add(1) // before the resync below takes the sessions
		g.listening.Store(true)
		if !first {
			for _, s := range g.sessions.all() {
				go g.sync(s.ctx, s)
			}
		}
		first = false
		g.listenReadyOnce.Do(func() { close(g.listenReady) })
		for {
			channel, payload, err := l.Wait(ctx)
			if err != nil {
				break
			}
			g.notified(ctx, channel, payload)
		}
		g.tokens.setLive(false)
		g.listening.Store(false)
		g.commandSeq.Add(1)
		_ = l.Close()
	}
}

// preparedFor returns, for each stream, m encoded for the wire: once for all the streams that
// agree on compression (grpc.PreparedMsg), rather than once per stream as Send would. A cluster's
// command goes to every agent of it, 10,000 times the same bytes.
func preparedFor(m *agentv1.ServerMessage) func(*session) outMessage {
	byCompressor := map[string]*grpc.PreparedMsg{}
	return func(s *session) outMessage {
		comp, known := s.sendCompressor()
		if !known {
			return outMessage{m: m} // sent as it is
		}
		pm, ok := byCompressor[comp]
		if !ok {
			pm = &grpc.PreparedMsg{}
			if pm.Encode(s.stream, m) != nil {
				pm = nil // sent as it is
			}
			byCompressor[comp] = pm
		}
		return outMessage{m: m, pm: pm}
	}
}

// readNotified loads the notified commands ids, trying again while the read fails (for at
// most notifiedReadFor): an agent connected here gets a command from this read or from its
// next connect, so a batch given up on at once would wait for its agents to reconnect.
// Meanwhile notifications queue behind it (once notifiedIDs is full, the LISTEN connection is
// not read, and Postgres keeps them), so none is lost either.
func (g *Gateway) readNotified(ctx context.Context, ids []uuid.UUID) (cmds map[uuid.UUID]models.AgentCommand, err error) {
	err = retry.Until(ctx, notifiedReadFor, retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}, func(ctx context.Context) error {
		if hook := g.notifiedReadHook.Load(); hook != nil {
			if err := (*hook)(); err != nil {
				return err
			}
		}
		c, err := g.store.GetCommands(ctx, ids)
		cmds = c
		return err
	}, func(_ int, wait time.Duration, err error) {
		g.log.Warn("load notified commands; retrying", "commands", len(ids), "retry_in", wait.Round(time.Millisecond), "err", err)
	})
	return cmds, err
}

// notifiedReadFor bounds the retries of a notified batch's read. Past it the batch is given up
// (its agents get those commands at their next connect, credentials and publishes also from
// the drift repair), so that a long outage does not hold the revokes and rotations queued
// behind it on the LISTEN connection.
const notifiedReadFor = 5 * time.Minute

// notifiedBatch bounds the commands loaded by one query of deliverNotified.
const notifiedBatch = 1000

func (g *Gateway) notified(ctx context.Context, channel, payload string) {
	switch channel {
	case store.AgentCommandChannel:
		id, err := uuid.Parse(payload)
		if err != nil {
			return
		}
		g.commandSeq.Add(1) // before the lookup: a connect registering now reads again
		select {
		case g.notifiedIDs <- id:
		case <-ctx.Done():
		}
	case store.AgentControlChannel:
		op, rest, _ := strings.Cut(payload, ":")
		id, err := uuid.Parse(rest)
		if err != nil {
			return
		}
		g.tokens.drop(id)   // its REST calls read its row again
		g.controlSeq.Add(1) // before the lookup: a connect registering now checks again
		s := g.sessions.get(id)
		if s == nil {
			return
		}
		switch op {
		case "revoke":
			s.close(agentv1.CloseReason_CLOSE_REASON_REVOKED, "this agent was revoked by an operator")
		case "delete":
			s.close(agentv1.CloseReason_CLOSE_REASON_REVOKED, "this agent was deleted by an operator")
		case "rotate":
			rt, _, err := g.replaceToken(ctx, s, true)
			if err != nil {
				g.log.Warn("token rotation for a live agent failed", "agent_id", id, "err", err)
				return
			}
			s.offer(&agentv1.ServerMessage{Payload: &agentv1.ServerMessage_ReplaceToken{ReplaceToken: rt}})
		}
	}
}

// deliverNotified sends the commands whose ids the LISTEN connection hands over to the local
// streams of their agents, in notification order. What has queued up while it was busy is
// loaded in one query: a credential rollout notifies once per cluster, 100 at a time.
func (g *Gateway) deliverNotified(ctx context.Context) {
	for {
		var ids []uuid.UUID
		select {
		case <-ctx.Done():
			return
		case id := <-g.notifiedIDs:
			ids = append(ids, id)
		}
	drain:
		for len(ids) < notifiedBatch {
			select {
			case id := <-g.notifiedIDs:
				ids = append(ids, id)
			default:
				break drain
			}
		}
		cmds, err := g.readNotified(ctx, ids)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			g.log.Warn("notified commands given up; their agents get them when they next connect or resync", "commands", len(ids), "err", err)
			continue
		}
		for _, id := range ids {
			c, ok := cmds[id]
			if !ok {
				continue
			}
			// Rendered once for every stream (a sent message is only read, so streams share it).
			m, err := g.toMessage(c)
			if err != nil {
				g.log.Error("unrenderable command skipped", "command_id", c.ID, "kind", c.Kind, "err", err)
				continue
			}
			if c.AgentID != nil {
				if s := g.sessions.get(*c.AgentID); s != nil {
					g.deliverMessage(s, c, outMessage{m: m})
				}
				continue
			}
			prepared := preparedFor(m)
			for _, s := range g.sessions.inCluster(c.ClusterID) {
				g.deliverMessage(s, c, prepared(s))
			}
		}
		g.notifiedLookedUp.Add(uint64(len(ids)))
	}
}
