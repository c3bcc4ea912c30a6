// Package httpfilter converts between the API's HttpFilter and the agent's httproute.Filter, so
// that the CLI, the traffic-manager and the traffic-agent read a request's filter the same way.
package httpfilter

import (
	"fmt"

	"teledock.dev/teledock/agent/httproute"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// FromProto is the filter p describes; nil is the zero Filter, which selects every request.
func FromProto(p *managerv1.HttpFilter) httproute.Filter {
	var f httproute.Filter
	for _, h := range p.GetHeaders() {
		f.Headers = append(f.Headers, httproute.HeaderMatch{Name: h.GetName(), Value: h.GetValue()})
	}
	f.PathEqual, f.PathPrefix, f.PathRegex = p.GetPathEqual(), p.GetPathPrefix(), p.GetPathRegex()
	return f
}

// ToProto is f for the API. Of several path matches (which Compile refuses) it keeps the first of
// equal, prefix, regex; the caller validates f first.
func ToProto(f httproute.Filter, plaintext bool) *managerv1.HttpFilter {
	p := &managerv1.HttpFilter{Plaintext: plaintext}
	for _, h := range f.Headers {
		p.Headers = append(p.Headers, &managerv1.HttpHeaderMatch{Name: h.Name, Value: h.Value})
	}
	switch {
	case f.PathEqual != "":
		p.Path = &managerv1.HttpFilter_PathEqual{PathEqual: f.PathEqual}
	case f.PathPrefix != "":
		p.Path = &managerv1.HttpFilter_PathPrefix{PathPrefix: f.PathPrefix}
	case f.PathRegex != "":
		p.Path = &managerv1.HttpFilter_PathRegex{PathRegex: f.PathRegex}
	}
	return p
}

// Selects reports whether p narrows the requests: a header or a path match. A filter without
// either (nil, or only plaintext) selects every request, which is an intercept of whole
// connections unless it is a wiretap.
func Selects(p *managerv1.HttpFilter) bool {
	return len(p.GetHeaders()) > 0 || p.GetPath() != nil
}

// Validate checks p as the flags that make it, and names the flag that is wrong: each header
// match and the path match must compile (httproute.Filter.Compile), and a path must not be empty.
func Validate(p *managerv1.HttpFilter) error {
	for _, h := range p.GetHeaders() {
		f := httproute.Filter{Headers: []httproute.HeaderMatch{{Name: h.GetName(), Value: h.GetValue()}}}
		if _, err := f.Compile(); err != nil {
			return fmt.Errorf("--http-header %s=%s: %w", h.GetName(), h.GetValue(), err)
		}
	}
	var flag, value string
	switch path := p.GetPath().(type) {
	case *managerv1.HttpFilter_PathEqual:
		flag, value = "--http-path-equal", path.PathEqual
	case *managerv1.HttpFilter_PathPrefix:
		flag, value = "--http-path-prefix", path.PathPrefix
	case *managerv1.HttpFilter_PathRegex:
		flag, value = "--http-path-regex", path.PathRegex
	default:
		return nil
	}
	if value == "" {
		return fmt.Errorf("%s with an empty path", flag)
	}
	if _, err := FromProto(&managerv1.HttpFilter{Path: p.GetPath()}).Compile(); err != nil {
		return fmt.Errorf("%s %s: %w", flag, value, err)
	}
	return nil
}
