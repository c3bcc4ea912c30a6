package inject

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func service(name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports},
	}
}

func TestServiceLinkEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		services []*corev1.Service
		want     map[string]string
	}{
		{
			name: "named ports, dashes, UDP",
			services: []*corev1.Service{service("cart-api", "10.96.0.20",
				corev1.ServicePort{Name: "http", Port: 80},
				corev1.ServicePort{Name: "grpc-web", Port: 9090, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "stats", Port: 8125, Protocol: corev1.ProtocolUDP},
			)},
			want: map[string]string{
				"CART_API_SERVICE_HOST":          "10.96.0.20",
				"CART_API_SERVICE_PORT":          "80",
				"CART_API_SERVICE_PORT_HTTP":     "80",
				"CART_API_SERVICE_PORT_GRPC_WEB": "9090",
				"CART_API_SERVICE_PORT_STATS":    "8125",
				"CART_API_PORT":                  "tcp://10.96.0.20:80",
				"CART_API_PORT_80_TCP":           "tcp://10.96.0.20:80",
				"CART_API_PORT_80_TCP_PROTO":     "tcp",
				"CART_API_PORT_80_TCP_PORT":      "80",
				"CART_API_PORT_80_TCP_ADDR":      "10.96.0.20",
				"CART_API_PORT_9090_TCP":         "tcp://10.96.0.20:9090",
				"CART_API_PORT_9090_TCP_PROTO":   "tcp",
				"CART_API_PORT_9090_TCP_PORT":    "9090",
				"CART_API_PORT_9090_TCP_ADDR":    "10.96.0.20",
				"CART_API_PORT_8125_UDP":         "udp://10.96.0.20:8125",
				"CART_API_PORT_8125_UDP_PROTO":   "udp",
				"CART_API_PORT_8125_UDP_PORT":    "8125",
				"CART_API_PORT_8125_UDP_ADDR":    "10.96.0.20",
			},
		},
		{
			name:     "unnamed single port, IPv6",
			services: []*corev1.Service{service("dns", "fd00::a", corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP})},
			want: map[string]string{
				"DNS_SERVICE_HOST":      "fd00::a",
				"DNS_SERVICE_PORT":      "53",
				"DNS_PORT":              "udp://[fd00::a]:53",
				"DNS_PORT_53_UDP":       "udp://[fd00::a]:53",
				"DNS_PORT_53_UDP_PROTO": "udp",
				"DNS_PORT_53_UDP_PORT":  "53",
				"DNS_PORT_53_UDP_ADDR":  "fd00::a",
			},
		},
		{
			name: "no cluster IP, no variables",
			services: []*corev1.Service{
				service("headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80}),
				service("external", "", corev1.ServicePort{Port: 80}),
				service("portless", "10.96.0.9"),
			},
			want: map[string]string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := serviceLinkEnv(tc.services); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}
