package inject

import (
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// serviceLinkEnv makes the variables the kubelet gives a container for each service it may
// link: FOO_SERVICE_HOST, FOO_SERVICE_PORT (the first port), FOO_SERVICE_PORT_<NAME> for each
// named port, and the Docker-link style FOO_PORT, FOO_PORT_<port>_<PROTO> and its _PROTO,
// _PORT and _ADDR. Services without a cluster IP (headless, ExternalName) get none.
func serviceLinkEnv(services []*corev1.Service) map[string]string {
	env := make(map[string]string)
	for _, svc := range services {
		ip := svc.Spec.ClusterIP
		if !hasClusterIP(svc) || len(svc.Spec.Ports) == 0 {
			continue
		}
		prefix := envName(svc.Name)
		env[prefix+"_SERVICE_HOST"] = ip
		env[prefix+"_SERVICE_PORT"] = strconv.Itoa(int(svc.Spec.Ports[0].Port))
		for i, p := range svc.Spec.Ports {
			port := strconv.Itoa(int(p.Port))
			if p.Name != "" {
				env[prefix+"_SERVICE_PORT_"+envName(p.Name)] = port
			}
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			url := strings.ToLower(proto) + "://" + net.JoinHostPort(ip, port)
			if i == 0 {
				env[prefix+"_PORT"] = url
			}
			link := prefix + "_PORT_" + port + "_" + strings.ToUpper(proto)
			env[link] = url
			env[link+"_PROTO"] = strings.ToLower(proto)
			env[link+"_PORT"] = port
			env[link+"_ADDR"] = ip
		}
	}
	return env
}

func hasClusterIP(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

// envName turns a service or port name into a variable name part, as the kubelet does: upper
// case, dashes to underscores.
func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}
