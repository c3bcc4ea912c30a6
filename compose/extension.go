package compose

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Extension is the name of teledock's compose extension, at the top level and on services.
const Extension = "x-teledock"

// Settings is the top-level x-teledock: which cluster and namespace the project's daemon connects
// to. Empty fields mean what `teledock connect` would use.
type Settings struct {
	Kubeconfig       string
	Context          string
	Namespace        string
	ManagerNamespace string
	Transport        string
}

// Mark is a service's x-teledock (or its Telepresence x-tele): how the service joins the cluster.
type Mark struct {
	// Intercept is set when the service receives the cluster's traffic for a workload.
	Intercept *Intercept
	// ImportEnv: the pod's environment goes into the service (intercepts only).
	ImportEnv bool
	// Mount is what the user asked for remote volumes; they are not built yet, so the plan says so.
	Mount string
}

// Intercept is one intercept that a marked service handles, in the CLI's terms.
type Intercept struct {
	Name     string   // intercept name; default: the workload
	Workload string   // default: the service's name
	Port     string   // LOCAL[:SVCPORT], as `intercept --port`
	Service  string   // --service
	ToPod    []string // --to-pod PORT[/UDP]
	Replace  bool     // --replace
}

// FieldError is an x-teledock (or x-tele) value that cannot be used; it names where it is.
type FieldError struct {
	File    string // the compose file that sets it, when known
	Service string // "" for the top level
	Key     string // e.g. "x-teledock.port"
	Err     error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Service != "" {
		b.WriteString("services." + e.Service + ".")
	}
	b.WriteString(e.Key + ": " + e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// ErrInvalid is what every x-teledock error wraps.
var ErrInvalid = errors.New("invalid value")

// parseSettings reads the top-level x-teledock mapping.
func parseSettings(v any) (Settings, error) {
	var s Settings
	m, err := mapping(v, Extension)
	if err != nil {
		return s, err
	}
	for k, val := range m {
		key := Extension + "." + k
		var err error
		switch k {
		case "kubeconfig":
			s.Kubeconfig, err = str(val, key)
		case "context":
			s.Context, err = str(val, key)
		case "namespace":
			s.Namespace, err = str(val, key)
		case "manager-namespace", "manager_namespace":
			s.ManagerNamespace, err = str(val, key)
		case "transport":
			if s.Transport, err = str(val, key); err == nil && !slices.Contains([]string{"auto", "port-forward", "direct"}, s.Transport) {
				err = fieldErr(key, "%q: use auto, port-forward or direct", s.Transport)
			}
		default:
			err = fieldErr(key, "unknown key (known: kubeconfig, context, namespace, manager-namespace, transport)")
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// parseMark reads a service's x-teledock. It returns nil when the service is not marked
// (`x-teledock: {connect: false}`).
func parseMark(service string, v any) (*Mark, error) {
	m, err := mapping(v, Extension)
	if err != nil {
		return nil, err
	}
	mark := &Mark{}
	connect := true
	var ic *Intercept
	intercept := func() *Intercept {
		if ic == nil {
			ic = &Intercept{}
		}
		return ic
	}
	env := ""
	for k, val := range m {
		key := Extension + "." + k
		var err error
		switch k {
		case "connect":
			connect, err = boolean(val, key)
		case "intercept":
			// `intercept: true` intercepts the workload named like the service.
			if b, ok := val.(bool); ok {
				if b {
					intercept()
				}
				break
			}
			intercept().Workload, err = str(val, key)
		case "name":
			intercept().Name, err = str(val, key)
		case "port":
			intercept().Port, err = portString(val, key)
		case "service":
			intercept().Service, err = str(val, key)
		case "to-pod", "to_pod":
			intercept().ToPod, err = strList(val, key)
		case "replace":
			intercept().Replace, err = boolean(val, key)
		case "env":
			if env, err = str(val, key); err == nil && env != "import" && env != "none" {
				err = fieldErr(key, "%q: use import or none", env)
			}
		case "mount":
			mark.Mount, err = mountString(val, key)
		default:
			err = fieldErr(key, "unknown key (known: intercept, name, port, service, to-pod, replace, env, mount, connect)")
		}
		if err != nil {
			return nil, err
		}
	}
	if ic != nil {
		if !connect {
			return nil, fieldErr(Extension+".connect", "false, but the service intercepts %q: an intercept needs the connection", ic.Workload)
		}
		if ic.Workload == "" {
			ic.Workload = service
		}
		if ic.Name == "" {
			ic.Name = ic.Workload
		}
		mark.Intercept = ic
		mark.ImportEnv = env != "none"
		return mark, nil
	}
	if env == "import" {
		return nil, fieldErr(Extension+".env", "import needs an intercept: the environment is the intercepted pod's")
	}
	if !connect {
		return nil, nil
	}
	return mark, nil
}

func fieldErr(key, format string, args ...any) error {
	return &FieldError{Key: key, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)}
}

func mapping(v any, key string) (map[string]any, error) {
	switch m := v.(type) {
	case map[string]any:
		return m, nil
	case nil:
		return map[string]any{}, nil
	}
	return nil, fieldErr(key, "must be a mapping, not %T", v)
}

func str(v any, key string) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	return "", fieldErr(key, "must be a string, not %T", v)
}

func boolean(v any, key string) (bool, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	return false, fieldErr(key, "must be true or false, not %v", v)
}

// portString accepts `port: 8080` as well as `port: "8080:http"`.
func portString(v any, key string) (string, error) {
	switch p := v.(type) {
	case string:
		return p, nil
	case int:
		return strconv.Itoa(p), nil
	case uint64:
		return strconv.FormatUint(p, 10), nil
	case int64:
		return strconv.FormatInt(p, 10), nil
	}
	return "", fieldErr(key, "must be LOCAL[:SVCPORT], not %v", v)
}

// strList accepts one value or a list of them (strings or numbers).
func strList(v any, key string) ([]string, error) {
	items, ok := v.([]any)
	if !ok {
		items = []any{v}
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, err := portString(it, key)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func mountString(v any, key string) (string, error) {
	switch m := v.(type) {
	case bool:
		return strconv.FormatBool(m), nil
	case string:
		return m, nil
	}
	return "", fieldErr(key, "must be true, false or a path, not %v", v)
}
