package compose

import (
	"strings"
)

// TeleExtension is Telepresence's compose extension. teledock reads its connect, intercept and
// replace engagements so that a file written for Telepresence works unchanged; the others are
// refused with a message.
const TeleExtension = "x-tele"

// parseTeleSettings reads the top-level x-tele: one connection's namespace and manager namespace.
func parseTeleSettings(v any) (Settings, error) {
	var s Settings
	m, err := mapping(v, TeleExtension)
	if err != nil {
		return s, err
	}
	for k, val := range m {
		key := TeleExtension + "." + k
		switch k {
		case "connections":
			list, ok := val.([]any)
			if !ok {
				return s, fieldErr(key, "must be a list")
			}
			if len(list) > 1 {
				return s, fieldErr(key, "teledock runs one connection per compose project; this file declares %d", len(list))
			}
			if len(list) == 0 {
				continue
			}
			conn, err := mapping(list[0], key+"[0]")
			if err != nil {
				return s, err
			}
			for ck, cv := range conn {
				ckey := key + "[0]." + ck
				var err error
				switch ck {
				case "name":
					_, err = str(cv, ckey) // the connection is the project's; its name does not matter
				case "namespace":
					s.Namespace, err = str(cv, ckey)
				case "manager-namespace":
					s.ManagerNamespace, err = str(cv, ckey)
				default:
					err = fieldErr(ckey, "not supported by teledock (supported: name, namespace, manager-namespace)")
				}
				if err != nil {
					return s, err
				}
			}
		case "mounts":
			return s, fieldErr(key, "not supported by teledock: an intercepted service gets its pod's volumes by default (x-teledock: {mount: false} turns that off)")
		default:
			return s, fieldErr(key, "unknown key (known: connections)")
		}
	}
	return s, nil
}

// parseTeleMark reads a service's x-tele engagement.
func parseTeleMark(service string, v any) (*Mark, error) {
	m, err := mapping(v, TeleExtension)
	if err != nil {
		return nil, err
	}
	typ, err := str(m["type"], TeleExtension+".type")
	if err != nil {
		return nil, err
	}
	typ = strings.ToLower(typ)
	var ic *Intercept
	switch typ {
	case "connect":
	case "intercept", "replace":
		ic = &Intercept{Replace: typ == "replace"}
	case "proxy", "ingest", "wiretap":
		return nil, fieldErr(TeleExtension+".type", "%q is not supported by teledock (supported: connect, intercept, replace)", typ)
	default:
		return nil, fieldErr(TeleExtension+".type", "%q: use connect, intercept or replace", typ)
	}
	for k, val := range m {
		key := TeleExtension + "." + k
		var err error
		switch {
		case k == "type":
		case k == "connection":
			_, err = str(val, key)
		case ic == nil:
			err = fieldErr(key, "a connect engagement takes no other keys")
		case k == "name":
			ic.Name, err = str(val, key)
		case k == "workload" && !ic.Replace:
			ic.Workload, err = str(val, key)
		case k == "service" && !ic.Replace:
			ic.Service, err = str(val, key)
		case k == "ports":
			var ports []string
			if ports, err = strList(val, key); err == nil {
				switch len(ports) {
				case 0:
				case 1:
					ic.Port = ports[0]
				default:
					err = fieldErr(key, "teledock intercepts one port per service; use one service per port")
				}
			}
		case k == "toPod":
			ic.ToPod, err = strList(val, key)
		case k == "container":
			err = fieldErr(key, "choosing the container is not supported by teledock yet")
		default:
			err = fieldErr(key, "not supported by teledock for type %s", typ)
		}
		if err != nil {
			return nil, err
		}
	}
	if ic == nil {
		return &Mark{}, nil
	}
	// Telepresence names the workload by name, and the intercept after the compose service.
	if ic.Workload == "" {
		ic.Workload = ic.Name
	}
	if ic.Workload == "" {
		ic.Workload = service
	}
	if ic.Name == "" {
		ic.Name = service
	}
	// Telepresence merges the pod's environment into the service; so does teledock.
	return &Mark{Intercept: ic, ImportEnv: true}, nil
}
