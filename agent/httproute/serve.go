package httproute

import (
	"context"
	"fmt"

	"teledock.dev/teledock/internal/flow"
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
	case proto == protoSilent:
		err = serveSilent(ctx, client, rc, c)
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
	app, done, err := dialApp(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	joinApp(rc, app)
	return nil
}

// dialApp dials the app for a connection that goes there whole; ctx's end closes it, as done does.
func dialApp(ctx context.Context, c *config) (app *onceConn, done func(), err error) {
	now := c.routing()
	conn, err := dialDest(ctx, dest{name: now.AppName, dial: now.App})
	if err != nil {
		return nil, nil, fmt.Errorf("pass a connection through: %w", err)
	}
	app = &onceConn{Conn: conn}
	stop := context.AfterFunc(ctx, func() { app.Close() })
	return app, func() {
		stop()
		app.Close()
	}, nil
}

// serveSilent serves a connection whose client said nothing within the sniff timeout: a protocol
// in which the server speaks first, or an HTTP client that opened its connection ahead of its
// first request (a pool). The app is dialled, and whichever side speaks first decides: the app,
// and the connection is the app's whole; the client, and its bytes are sniffed as usual (the
// app's connection is then dropped unless they are not HTTP).
func serveSilent(ctx context.Context, in Conn, rc *replayConn, c *config) error {
	app, done, err := dialApp(ctx, c)
	if err != nil {
		return err
	}
	defer done()
	appRC := &replayConn{Conn: app, pending: startRead(app)}
	select {
	case r := <-appRC.pending:
		appRC.pending, appRC.buf, appRC.err = nil, r.data, r.err
	case r := <-rc.pending:
		rc.pending, rc.buf, rc.err = nil, append(rc.buf, r.data...), r.err
		switch rc.sniff(ctx, nil) {
		case protoHTTP1:
			app.Close()
			<-appRC.pending // the read ends with the connection
			return serveHTTP1(ctx, in, rc, c)
		case protoH2C:
			app.Close()
			<-appRC.pending
			return serveH2C(ctx, rc, c)
		}
	case <-ctx.Done():
		return nil
	}
	c.stats.NotHTTP.Add(1)
	joinApp(rc, appRC)
	return nil
}

// joinApp joins a client connection with the app's, half-closes passed on (flow.Join).
func joinApp(client, app flow.End) {
	_ = flow.Join(flow.Side{Name: "client", End: client}, flow.Side{Name: "app", End: app}, func() {
		closeEnd(client)
		closeEnd(app)
	})
}

func closeEnd(e flow.End) {
	if c, ok := e.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}
