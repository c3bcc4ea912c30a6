// Package redirect installs the nftables rules that hand a pod's incoming connections for an
// app port to the traffic-agent's port.
package redirect

import (
	"errors"
	"fmt"
)

// TableName is the nftables table (family inet) that holds the rules; nothing else is touched.
const TableName = "teledock"

// ErrInvalid is wrapped by errors about the rules given to Install.
var ErrInvalid = errors.New("invalid redirect")

// Redirect sends what arrives for AppPort to AgentPort.
type Redirect struct {
	Protocol  string // "tcp" or "udp"
	AppPort   uint16
	AgentPort uint16
}

func (r Redirect) String() string {
	return fmt.Sprintf("%s dport %d redirect to :%d", r.Protocol, r.AppPort, r.AgentPort)
}

// Validate checks that rules make sense together: one destination per app port and protocol.
func Validate(rules []Redirect) error {
	type key struct {
		proto string
		port  uint16
	}
	seen := make(map[key]uint16)
	for _, r := range rules {
		if r.Protocol != "tcp" && r.Protocol != "udp" {
			return fmt.Errorf("%w: protocol %q, want tcp or udp", ErrInvalid, r.Protocol)
		}
		if r.AppPort == 0 || r.AgentPort == 0 || r.AppPort == r.AgentPort {
			return fmt.Errorf("%w: %s", ErrInvalid, r)
		}
		k := key{r.Protocol, r.AppPort}
		if prev, ok := seen[k]; ok && prev != r.AgentPort {
			return fmt.Errorf("%w: %s dport %d goes to both :%d and :%d", ErrInvalid, r.Protocol, r.AppPort, prev, r.AgentPort)
		}
		seen[k] = r.AgentPort
	}
	return nil
}
