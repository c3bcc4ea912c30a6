package httproute

import (
	"context"
	"fmt"
)

// serve does the work of Serve.
func serve(parent context.Context, in Conn, cfg Config) error {
	c := newConfig(cfg)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	client := &onceConn{Conn: in}
	defer client.Close()
	// Conn has no deadlines: closing it is what unblocks reads and writes when ctx ends.
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()

	proto, rc := sniff(ctx, client, c.SniffTimeout)
	var err error
	switch {
	case ctx.Err() != nil:
	case proto == protoHTTP1:
		err = serveHTTP1(ctx, client, rc, c)
	case proto == protoH2C:
		err = serveH2C(ctx, rc, c)
	default:
		err = passThrough(ctx, client, rc, c)
	}
	if parent.Err() != nil {
		return context.Cause(parent)
	}
	return err
}

// passThrough joins the client connection with the app, replaying the sniffed bytes.
func passThrough(ctx context.Context, in Conn, rc *replayConn, c *config) error {
	c.stats.NotHTTP.Add(1)
	now := c.routing()
	d := dest{name: now.AppName, dial: now.App}
	conn, err := dialDest(ctx, d)
	if err != nil {
		return fmt.Errorf("pass a connection through: %w", err)
	}
	app := &onceConn{Conn: conn}
	defer app.Close()
	stop := context.AfterFunc(ctx, func() { app.Close() })
	defer stop()
	join(rc, in, app, app)
	return nil
}
