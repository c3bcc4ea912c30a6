package httproute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// config is a Config with its defaults applied.
type config struct {
	Config
	log   *slog.Logger
	stats *Stats
}

func newConfig(cfg Config) *config {
	c := &config{Config: cfg, log: cfg.Log, stats: cfg.Stats}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.stats == nil {
		c.stats = new(Stats)
	}
	if c.SniffTimeout <= 0 {
		c.SniffTimeout = DefaultSniffTimeout
	}
	return c
}

// dest is where a request goes: the app or a route. Its name (unique: route names are) keys the
// upstream connections kept for it.
type dest struct {
	name string // for logs and error pages
	dial Dialer
}

// routing is where requests go now: Live's answer, or App and Routes.
func (c *config) routing() Routing {
	r := Routing{App: c.App, Routes: c.Routes}
	if c.Live != nil {
		r = c.Live()
	}
	if r.AppName == "" {
		r.AppName = "the app"
	}
	return r
}

// route picks the destination of one request and the wiretaps that get a copy, and counts it,
// for the port and for the routes it takes. Both HTTP/1.x requests and h2c streams come here
// once each, so the counts are of requests, whatever connections carry them.
func (c *config) route(path string, h http.Header) (dest, []*Tap) {
	now := c.routing()
	d := dest{name: now.AppName, dial: now.App}
	found := false
	var taps []*Tap
	for _, r := range now.Routes {
		if !r.Match.Match(path, h) {
			continue
		}
		switch {
		case r.Tap != nil:
			taps = append(taps, r.Tap)
			if r.Stats != nil {
				r.Stats.Requests.Add(1)
			}
		case r.Dial != nil && !found:
			d, found = dest{name: "intercept " + r.Name, dial: r.Dial}, true
			if r.Stats != nil {
				r.Stats.Requests.Add(1)
				r.Stats.Intercepted.Add(1)
			}
		}
	}
	c.stats.Requests.Add(1)
	if found {
		c.stats.Intercepted.Add(1)
	}
	return d, taps
}

// dialDest dials d, turning a panic-free nil Dialer into an error.
func dialDest(ctx context.Context, d dest) (Conn, error) {
	if d.dial == nil {
		return nil, fmt.Errorf("%s: no dialer", d.name)
	}
	conn, err := d.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", d.name, err)
	}
	if conn == nil {
		return nil, fmt.Errorf("dial %s: %w", d.name, errors.New("no connection"))
	}
	return conn, nil
}

// badGatewayText is the body of the 502 that answers a request whose destination is unreachable.
func badGatewayText(d dest) string {
	return "teledock: " + d.name + " is not reachable\n"
}

// requestPath is the path of an HTTP/1.x request target, without the query and decoded like
// net/http's URL.Path (which is what h2c requests are matched on).
func requestPath(target string) string {
	if target == "*" {
		return target
	}
	if u, err := url.ParseRequestURI(target); err == nil {
		return u.Path
	}
	p, _, _ := strings.Cut(target, "?")
	return p
}
