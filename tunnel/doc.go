// Package tunnel carries one TCP connection or UDP flow over one stream of the manager's Tunnel RPC:
// Dial is the client end, Server the end that dials the destination.
package tunnel
