package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Listener is one connection that receives the NOTIFY messages of some channels (the agent
// outbox, agent control). It is its own connection, not one of the pool's: it stays open and
// idle for as long as it listens.
type Listener struct {
	conn *pgx.Conn
}

// Listen connects to the database at url and listens on channels.
func Listen(ctx context.Context, url string, channels ...string) (*Listener, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	stmts := make([]string, len(channels))
	for i, c := range channels {
		stmts[i] = "LISTEN " + pgx.Identifier{c}.Sanitize()
	}
	if _, err := conn.Exec(ctx, strings.Join(stmts, "; ")); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return &Listener{conn: conn}, nil
}

// Wait blocks until a notification arrives (or ctx ends, or the connection drops) and returns
// its channel and payload.
func (l *Listener) Wait(ctx context.Context) (channel, payload string, err error) {
	n, err := l.conn.WaitForNotification(ctx)
	if err != nil {
		return "", "", err
	}
	return n.Channel, n.Payload, nil
}

// Close ends the connection.
func (l *Listener) Close() error { return l.conn.Close(context.Background()) }
