// Package httproute routes the HTTP requests of one connection on a filtered intercept port: each
// request (HTTP/1.1, split at request boundaries on keep-alive connections) or stream (h2c and
// gRPC) goes to the first intercept whose filter it matches, and every other request to the app,
// unchanged. Wiretaps get a copy of the requests they match while the app answers them.
// Connections that do not speak HTTP go to the app whole.
package httproute

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sync/atomic"
	"time"
)

// Filter selects requests. Header values and PathRegex are Go regular expressions that must match
// the whole value; header names are case-insensitive; a header sent several times must match with
// every value. All header matches and the path match must hold. The zero Filter matches every
// request.
type Filter struct {
	Headers    []HeaderMatch
	PathEqual  string
	PathPrefix string
	PathRegex  string
}

// HeaderMatch is one NAME=VALUE of --http-header.
type HeaderMatch struct {
	Name  string
	Value string // a regular expression for the whole value
}

// Matcher is a compiled Filter.
type Matcher struct {
	headers    []headerMatcher
	pathEqual  string
	pathPrefix string
	pathRegex  *regexp.Regexp
}

// Compile checks f (at most one path matcher, valid regular expressions, header names that are
// HTTP tokens) and compiles it.
func (f Filter) Compile() (*Matcher, error) { return compile(f) }

// Match reports whether a request with this path (no query) and header is selected.
func (m *Matcher) Match(path string, h http.Header) bool { return m.match(path, h) }

// Overlaps reports whether some request could match both f and g. It answers false only when the
// two are provably disjoint: the same header name with different literal values (no regular
// expression metacharacters), or path matches that cannot both hold (different equal paths,
// prefixes neither of which starts the other, an equal path outside the other's prefix).
func (f Filter) Overlaps(g Filter) bool { return overlaps(f, g) }

// String is the filter as users wrote it, e.g. `header x-dev=alice, path prefix /api`; the zero
// Filter is "all requests".
func (f Filter) String() string { return filterString(f) }

// Conn is one end of a byte stream that can be half-closed (a TCP connection, a tunnel stream).
type Conn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Dialer opens a new connection to a destination.
type Dialer func(ctx context.Context) (Conn, error)

// Route is one intercept of the port: Dial answers the requests it matches, or, for a wiretap,
// Tap gets a copy of them while the app (or another intercept) answers.
type Route struct {
	Name  string // the intercept id, for logs
	Match *Matcher
	Dial  Dialer // nil for a wiretap
	Tap   *Tap   // nil unless a wiretap
	// Stats, when not nil, counts this route's requests, request by request (not connections):
	// Requests counts the requests and streams it answers, and for a wiretap the ones it gets a
	// copy of; Intercepted counts the ones it answers (a 502 for an unreachable Dial included).
	// Copied and Dropped stay the Tap's (TapConfig.Stats), and NotHTTP the port's.
	Stats *Stats
}

// Tap delivers request copies to one wiretap's handler, from every connection of the port, over
// its own connections: a bounded queue, so a slow or dead handler never holds up the app; copies
// that do not fit, or that the handler fails to take, are dropped and counted. Responses are read
// and discarded.
type Tap struct{ tapState }

// TapConfig configures a Tap.
type TapConfig struct {
	Log  *slog.Logger
	Dial Dialer // the developer's handler
	// Queue is the number of copies held for a slow handler; 0 means DefaultWiretapQueue.
	Queue int
	// Body is the most body bytes a copy keeps (the rest is cut, and the copy's Content-Length
	// says what it carries); 0 means DefaultWiretapBody.
	Body  int
	Stats *Stats // may be nil
}

// NewTap starts a Tap; Close stops it and drops what is queued.
func NewTap(cfg TapConfig) *Tap { return newTap(cfg) }

// Close stops the Tap's delivery; it is idempotent.
func (t *Tap) Close() error { return t.close() }

// Config is what Serve routes to.
type Config struct {
	Log *slog.Logger
	App Dialer // the app's port
	// Routes are tried in order; the first non-wiretap route that matches answers the request,
	// and every matching wiretap gets a copy.
	Routes []Route
	// Live, when set, gives the app and the routes afresh for each request (or stream), in place
	// of App and Routes: a connection that stays open (keep-alive, a gRPC channel) then follows
	// intercepts that start and end. Upstream connections are kept by destination name.
	Live func() Routing
	// SniffTimeout bounds the wait for a connection's first bytes before it goes to the app whole
	// (a server-speaks-first protocol); 0 means DefaultSniffTimeout.
	SniffTimeout time.Duration
	Stats        *Stats // the port's totals over every route and the app; may be nil
}

// Routing is what Config.Live gives: where requests go now.
type Routing struct {
	App     Dialer
	AppName string // for logs and error pages, and the key of its kept connections; "" is "the app"
	Routes  []Route
}

// Defaults of Config.
const (
	DefaultSniffTimeout = 2 * time.Second
	DefaultWiretapQueue = 64
	DefaultWiretapBody  = 64 << 10
)

// Stats counts what Serve did, across connections: Config.Stats for the whole port (a Router
// keeps one per port), Route.Stats for one route.
type Stats struct {
	Requests    atomic.Uint64 // requests and streams seen
	Intercepted atomic.Uint64 // answered by an intercept
	Copied      atomic.Uint64 // copies delivered to wiretaps
	Dropped     atomic.Uint64 // copies dropped: a wiretap's queue was full or its handler failed
	NotHTTP     atomic.Uint64 // connections passed to the app whole
}

// Serve routes the requests of in until either side closes it, ctx ends, or a protocol error
// makes the connection unusable, and closes in before it returns. Copies handed to a Tap may
// still be delivered after Serve returns.
func Serve(ctx context.Context, in Conn, cfg Config) error { return serve(ctx, in, cfg) }
