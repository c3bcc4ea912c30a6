package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"teledock.dev/teledock/agent/httproute"
	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/httpfilter"
)

// Personal intercepts and wiretaps: the flags that give an intercept an HTTP filter, as
// Telepresence spells them, and how the filter shows in the intercept's output.

// autoHeader is the header that --http-header auto sets to a random value.
const autoHeader = "x-teledock-id"

type httpFilterOptions struct {
	headers    []string // --http-header NAME=VALUE or auto
	pathEqual  string
	pathPrefix string
	pathRegex  string
	plaintext  bool
	wiretap    bool
	// random makes the value of --http-header auto; nil means crypto/rand.
	random io.Reader
}

func (o *httpFilterOptions) addFlags(f *pflag.FlagSet) {
	f.StringArrayVar(&o.headers, "http-header", nil, "NAME=VALUE: intercept only the HTTP requests whose header NAME matches the regular expression VALUE as a whole (repeatable; all must match); "+
		"auto generates a personal "+autoHeader+" header and shows it. Requests that match no intercept go to the app")
	f.StringVar(&o.pathEqual, "http-path-equal", "", "intercept only the HTTP requests with this path")
	f.StringVar(&o.pathPrefix, "http-path-prefix", "", "intercept only the HTTP requests whose path starts with this prefix")
	f.StringVar(&o.pathRegex, "http-path-regex", "", "intercept only the HTTP requests whose path matches this regular expression as a whole")
	f.BoolVar(&o.plaintext, "http-plaintext", false, "accepted for Telepresence compatibility; it changes nothing: teledock tells cleartext HTTP/2 (h2c) by its preface")
	f.BoolVar(&o.wiretap, "wiretap", false, "get a copy of each HTTP request (of the --http-* filter's, when given) while the app answers it; never conflicts with other intercepts")
}

// filter checks the flags and returns the request's filter: nil when no flag makes one. The
// value of --http-header auto is generated here, so that the filter the user sees is the one the
// cluster applies.
func (o httpFilterOptions) filter(replace bool) (*managerv1.HttpFilter, error) {
	var paths []string
	for flag, v := range map[string]string{"--http-path-equal": o.pathEqual, "--http-path-prefix": o.pathPrefix, "--http-path-regex": o.pathRegex} {
		if v != "" {
			paths = append(paths, flag)
		}
	}
	if len(paths) > 1 {
		return nil, fmt.Errorf("%w: give at most one of --http-path-equal, --http-path-prefix and --http-path-regex", errBadFilter)
	}
	if len(o.headers) == 0 && len(paths) == 0 && !o.wiretap {
		if o.plaintext {
			return nil, fmt.Errorf("%w: --http-plaintext goes with --http-header, an --http-path flag or --wiretap", errBadFilter)
		}
		return nil, nil
	}
	if replace {
		return nil, fmt.Errorf("%w: --replace cannot be combined with --http-* filters or --wiretap: it stops the app, which must answer the requests the intercept does not take", errBadFilter)
	}
	rf := httproute.Filter{PathEqual: o.pathEqual, PathPrefix: o.pathPrefix, PathRegex: o.pathRegex}
	auto := false
	for _, h := range o.headers {
		if h == "auto" {
			if auto {
				return nil, fmt.Errorf("%w: --http-header auto given twice", errBadFilter)
			}
			auto = true
			v, err := o.personalID()
			if err != nil {
				return nil, err
			}
			rf.Headers = append(rf.Headers, httproute.HeaderMatch{Name: autoHeader, Value: v})
			continue
		}
		name, value, ok := strings.Cut(h, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: --http-header %q: want NAME=VALUE, or auto", errBadFilter, h)
		}
		rf.Headers = append(rf.Headers, httproute.HeaderMatch{Name: name, Value: value})
	}
	f := httpfilter.ToProto(rf, o.plaintext)
	if err := httpfilter.Validate(f); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadFilter, err)
	}
	if !httpfilter.Selects(f) && !f.GetPlaintext() {
		return nil, nil // a wiretap of every request
	}
	return f, nil
}

// personalID is a value for --http-header auto: random, so that no one else's requests carry it.
func (o httpFilterOptions) personalID() (string, error) {
	r := o.random
	if r == nil {
		r = rand.Reader
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("--http-header auto: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// filterField is the line the intercept's block adds for a filtered intercept or a wiretap.
func filterField(info *managerv1.InterceptInfo) field {
	desc := info.GetHttpFilter()
	if info.GetFilter().GetPlaintext() && desc != "" {
		desc += " (--http-plaintext)"
	}
	if info.GetWiretap() {
		if desc == "" {
			desc = "all requests"
		}
		return field{"Wiretap", desc}
	}
	return field{"HTTP filter", desc}
}

// counterText says what an intercept's counters count: "3 requests" for a filtered intercept,
// "5 copies, 1 dropped" for a wiretap; "" when the manager gave none.
func counterText(info interface {
	GetWiretap() bool
	GetCounters() *managerv1.InterceptCounters
}) string {
	c := info.GetCounters()
	switch {
	case c == nil:
		return ""
	case info.GetWiretap():
		return fmt.Sprintf("%d copies, %d dropped", c.GetCopied(), c.GetDropped())
	}
	return fmt.Sprintf("%d requests", c.GetIntercepted())
}

// httpFilterJSON is an intercept's filter in -o json output.
type httpFilterJSON struct {
	Headers    []httpHeaderJSON `json:"headers,omitempty"`
	PathEqual  string           `json:"path_equal,omitempty"`
	PathPrefix string           `json:"path_prefix,omitempty"`
	PathRegex  string           `json:"path_regex,omitempty"`
	Plaintext  bool             `json:"plaintext,omitempty"`
}

type httpHeaderJSON struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// countersJSON are an intercept's request counters in -o json output.
type countersJSON struct {
	Intercepted uint64 `json:"intercepted"`
	Copied      uint64 `json:"copied"`
	Dropped     uint64 `json:"dropped"`
}

func newHTTPFilterJSON(f *managerv1.HttpFilter) *httpFilterJSON {
	if f == nil {
		return nil
	}
	j := &httpFilterJSON{PathEqual: f.GetPathEqual(), PathPrefix: f.GetPathPrefix(), PathRegex: f.GetPathRegex(), Plaintext: f.GetPlaintext()}
	for _, h := range f.GetHeaders() {
		j.Headers = append(j.Headers, httpHeaderJSON{Name: h.GetName(), Value: h.GetValue()})
	}
	return j
}

func newCountersJSON(c *managerv1.InterceptCounters) *countersJSON {
	if c == nil {
		return nil
	}
	return &countersJSON{Intercepted: c.GetIntercepted(), Copied: c.GetCopied(), Dropped: c.GetDropped()}
}
