package redirect

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const chainName = "prerouting"

// Install replaces the teledock table of the calling thread's network namespace with one whose
// nat prerouting chain redirects each rule's protocol and destination port to the agent port.
// It needs CAP_NET_ADMIN; the init container runs it once, before the app starts.
//
// Only traffic that arrives from outside the pod is redirected. Packets that the pod sends
// itself — the agent dialing the app at 127.0.0.1:APP_PORT, a sidecar calling localhost — pass
// the output hook, where their NAT binding is settled, and even when looped back through lo
// they never consult the prerouting nat chain. So the agent needs no mark or exception to
// reach the app behind the redirect.
//
// It is idempotent: the table is deleted and recreated in one netlink transaction, so a rerun
// (a restarted init container) leaves exactly the given rules and never a half-made table.
func Install(rules []Redirect) error {
	if err := Validate(rules); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return install(c, rules)
}

// Installed reads back the rules of the teledock table in the calling thread's network
// namespace; it returns nil when there is no table.
func Installed() ([]Redirect, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return installed(c)
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func install(c *nftables.Conn, rules []Redirect) error {
	t := table()
	// Adding first makes the delete succeed whether or not the table existed.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	chain := c.AddChain(&nftables.Chain{
		Name:     chainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityNATDest,
	})
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: ruleExprs(r)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables redirect: %w", err)
	}
	return nil
}

// ruleExprs is "meta l4proto P th dport APP redirect to :AGENT".
func ruleExprs(r Redirect) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumber(r.Protocol)}},
		// The destination port is at offset 2 of both the TCP and the UDP header.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.AppPort)},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.AgentPort)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func protoNumber(p string) byte {
	if p == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

func installed(c *nftables.Conn) ([]Redirect, error) {
	t := table()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	i := slices.IndexFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == TableName && ch.Name == chainName })
	if i < 0 {
		return nil, nil
	}
	rules, err := c.GetRules(t, chains[i])
	if err != nil {
		return nil, fmt.Errorf("list nftables rules: %w", err)
	}
	var out []Redirect
	for _, rule := range rules {
		r, err := parseRule(rule.Exprs)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

var errForeignRule = errors.New("rule not made by teledock")

// parseRule reverses ruleExprs.
func parseRule(exprs []expr.Any) (Redirect, error) {
	if len(exprs) != 6 {
		return Redirect{}, fmt.Errorf("%w: %d expressions", errForeignRule, len(exprs))
	}
	proto, ok1 := exprs[1].(*expr.Cmp)
	port, ok2 := exprs[3].(*expr.Cmp)
	agent, ok3 := exprs[4].(*expr.Immediate)
	_, ok4 := exprs[5].(*expr.Redir)
	if !ok1 || !ok2 || !ok3 || !ok4 || len(proto.Data) != 1 || len(port.Data) != 2 || len(agent.Data) != 2 {
		return Redirect{}, fmt.Errorf("%w: %v", errForeignRule, exprs)
	}
	r := Redirect{
		Protocol:  "tcp",
		AppPort:   binaryutil.BigEndian.Uint16(port.Data),
		AgentPort: binaryutil.BigEndian.Uint16(agent.Data),
	}
	if proto.Data[0] == unix.IPPROTO_UDP {
		r.Protocol = "udp"
	}
	return r, nil
}
