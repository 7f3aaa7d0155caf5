package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/imprun/imprun-server/proto/agentv1"
)

// simAgent is a bare agent.v1 client: one gRPC connection and stream, no state directory, no
// rendering. It heartbeats at the interval the server asks for and acknowledges every
// credential command at once, so many of them cost little (the benchmark runs one per
// cluster). Tests also use it to send what a real agent never would.
type simAgent struct {
	ID        string
	ClusterID string

	conn   *grpc.ClientConn
	stream agentv1.AgentService_ConnectClient
	sendMu sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	// deployFailure, when set (a string), makes the agent answer deploys FAILED with it.
	deployFailure atomic.Value
	// acked counts the credential commands this agent acknowledged.
	acked atomic.Int64
}

// dialSimAgent connects with req's credential and waits for the ConnectResponse. Each
// simulated agent has a connection of its own, as separate processes would (the server caps
// the streams of one connection).
func dialSimAgent(addr string, req *agentv1.ConnectRequest) (*simAgent, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &simAgent{conn: conn, cancel: cancel, done: make(chan struct{})}
	fail := func(err error) (*simAgent, error) {
		cancel()
		_ = conn.Close()
		return nil, err
	}
	a.stream, err = agentv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return fail(err)
	}
	if err := a.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_ConnectRequest{ConnectRequest: req}}); err != nil {
		return fail(err)
	}
	first, err := a.stream.Recv()
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	resp := first.GetConnectResponse()
	if resp == nil {
		return fail(fmt.Errorf("connect: got %v", first))
	}
	a.ID, a.ClusterID = resp.GetAgentId(), resp.GetClusterId()
	interval := time.Duration(resp.GetHeartbeatIntervalSeconds()) * time.Second
	go a.heartbeats(ctx, interval)
	go a.receive()
	return a, nil
}

func (a *simAgent) send(m *agentv1.AgentMessage) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.stream.Send(m)
}

// heartbeat sends one Heartbeat carrying usage.
func (a *simAgent) heartbeat(usage ...*agentv1.CredentialUsage) error {
	return a.send(&agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{
		SentAt: timestamppb.Now(), CredentialUsage: usage}}})
}

func (a *simAgent) heartbeats(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if a.heartbeat() != nil {
				return
			}
		}
	}
}

// receive answers the server until the stream ends.
func (a *simAgent) receive() {
	defer close(a.done)
	for {
		m, err := a.stream.Recv()
		if err != nil {
			a.err = err
			return
		}
		var reply *agentv1.AgentMessage
		switch p := m.Payload.(type) {
		case *agentv1.ServerMessage_CredentialUpsert:
			reply = ack(p.CredentialUpsert.GetCommandId())
		case *agentv1.ServerMessage_CredentialRevoke:
			reply = ack(p.CredentialRevoke.GetCommandId())
		case *agentv1.ServerMessage_DeployCommand:
			res := &agentv1.DeployResult{
				CommandId: p.DeployCommand.GetCommandId(), PublishId: p.DeployCommand.GetPublishId(), Revision: p.DeployCommand.GetRevision(),
				Status: agentv1.DeployStatus_DEPLOY_STATUS_SUCCEEDED, Checksum: p.DeployCommand.GetChecksum(), Message: "simulated"}
			if msg, _ := a.deployFailure.Load().(string); msg != "" {
				res.Status, res.Message, res.Checksum = agentv1.DeployStatus_DEPLOY_STATUS_FAILED, msg, ""
			}
			reply = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_DeployResult{DeployResult: res}}
		case *agentv1.ServerMessage_ReplaceToken:
			reply = &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_TokenReplaced{TokenReplaced: &agentv1.TokenReplaced{
				CommandId: p.ReplaceToken.GetCommandId(), Success: true}}}
		case *agentv1.ServerMessage_Close:
			a.err = errors.New("closed by the server: " + p.Close.GetReason().String())
			return
		}
		if reply == nil {
			continue
		}
		if err := a.send(reply); err != nil {
			a.err = err
			return
		}
		if m.GetCredentialUpsert() != nil || m.GetCredentialRevoke() != nil {
			a.acked.Add(1)
		}
	}
}

func ack(commandID string) *agentv1.AgentMessage {
	return &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandAck{CommandAck: &agentv1.CommandAck{CommandId: commandID, Success: true}}}
}

// close ends the stream and the connection.
func (a *simAgent) close() {
	a.cancel()
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
	}
	_ = a.conn.Close()
}
