package inject

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"teledock.dev/teledock/agent/agentconfig"
)

// The annotations that make container ports interceptable without a service. Both mean the same;
// the telepresence one is honoured so that existing manifests work unchanged.
const (
	AnnotationInjectPorts       = "teledock.dev/inject-container-ports"
	LegacyAnnotationInjectPorts = "telepresence.getambassador.io/inject-container-ports"
)

// ErrBadAnnotation is wrapped by errors about an inject-container-ports value.
var ErrBadAnnotation = errors.New("bad annotation")

const injectPortsFormat = `expected a comma-separated list of container port names or numbers, ` +
	`each optionally suffixed with /TCP or /UDP (e.g. "http,8080/UDP")`

// PortRef is one item of the inject-container-ports annotation: a container port by name or by
// number, and maybe a protocol.
type PortRef struct {
	Name     string               // set when the item names the port
	Number   uint16               // set when the item is a number
	Protocol agentconfig.Protocol // empty when the item has no suffix
}

func (p PortRef) String() string {
	s := p.Name
	if s == "" {
		s = strconv.Itoa(int(p.Number))
	}
	if p.Protocol != "" {
		s += "/" + string(p.Protocol)
	}
	return s
}

// InjectPorts reads the inject-container-ports annotation from a pod template's annotations. It
// returns nil when neither spelling is present. When both are present they must agree: a
// migration that left two different lists behind is a mistake worth hearing about.
func InjectPorts(annotations map[string]string) ([]PortRef, error) {
	v, ok := annotations[AnnotationInjectPorts]
	legacy, legacyOK := annotations[LegacyAnnotationInjectPorts]
	switch {
	case ok && legacyOK && strings.TrimSpace(v) != strings.TrimSpace(legacy):
		return nil, fmt.Errorf("%w: %s=%q and %s=%q disagree; keep one of them", ErrBadAnnotation,
			AnnotationInjectPorts, v, LegacyAnnotationInjectPorts, legacy)
	case ok:
		return ParseInjectPorts(AnnotationInjectPorts, v)
	case legacyOK:
		return ParseInjectPorts(LegacyAnnotationInjectPorts, legacy)
	}
	return nil, nil
}

// ParseInjectPorts parses the value of the annotation named annotation (the name only serves the
// error messages). Repeated items are dropped.
func ParseInjectPorts(annotation, value string) ([]PortRef, error) {
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%w %s: empty value: %s", ErrBadAnnotation, annotation, injectPortsFormat)
	}
	var refs []PortRef
	seen := make(map[PortRef]bool)
	for item := range strings.SplitSeq(value, ",") {
		item = strings.TrimSpace(item)
		ref, err := parsePortRef(item)
		if err != nil {
			return nil, fmt.Errorf("%w %s: bad item %q (%w): %s", ErrBadAnnotation, annotation, item, err, injectPortsFormat)
		}
		if !seen[ref] {
			seen[ref] = true
			refs = append(refs, ref)
		}
	}
	return refs, nil
}

func parsePortRef(item string) (PortRef, error) {
	var ref PortRef
	if item == "" {
		return ref, errors.New("empty item")
	}
	port, proto, hasProto := strings.Cut(item, "/")
	if hasProto {
		switch strings.ToUpper(proto) {
		case string(agentconfig.TCP):
			ref.Protocol = agentconfig.TCP
		case string(agentconfig.UDP):
			ref.Protocol = agentconfig.UDP
		default:
			return ref, fmt.Errorf("protocol %q is not TCP or UDP", proto)
		}
	}
	if isDigits(port) {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return ref, fmt.Errorf("port number %s is not in 1-65535", port)
		}
		ref.Number = uint16(n)
		return ref, nil
	}
	// A container port name is an IANA service name: at most 15 characters, lower case letters,
	// digits and inner single hyphens, at least one letter.
	if errs := validation.IsValidPortName(port); len(errs) > 0 {
		return ref, fmt.Errorf("%q is not a port name: %s", port, strings.Join(errs, "; "))
	}
	ref.Name = port
	return ref, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
