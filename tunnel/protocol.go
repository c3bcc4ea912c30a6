package tunnel

import managerv1 "teledock.dev/teledock/api/manager/v1"

// NetworkOf is package net's name for a wire protocol: "tcp" or "udp", and "" for any other
// (PROTOCOL_UNSPECIFIED included: callers that default it to TCP say so themselves).
func NetworkOf(p managerv1.Protocol) string {
	switch p {
	case managerv1.Protocol_PROTOCOL_TCP:
		return "tcp"
	case managerv1.Protocol_PROTOCOL_UDP:
		return "udp"
	}
	return ""
}

// ProtocolOf is the wire protocol of a package net network ("tcp", "udp", with or without a 4 or
// 6 suffix), and PROTOCOL_UNSPECIFIED for any other.
func ProtocolOf(network string) managerv1.Protocol {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return managerv1.Protocol_PROTOCOL_TCP
	case "udp", "udp4", "udp6":
		return managerv1.Protocol_PROTOCOL_UDP
	}
	return managerv1.Protocol_PROTOCOL_UNSPECIFIED
}
