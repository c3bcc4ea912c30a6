// Package inject plans, injects and feeds the traffic-agent: it maps a workload's services to
// container ports, mutates pods through an admission webhook, and resolves a container's
// environment the way the kubelet does.
package inject
