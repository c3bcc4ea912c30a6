package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Sentinels for a failed Dial, matched with errors.Is. A *DialError also matches the errno a kernel
// would have returned (syscall.ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT), so a netstack that already maps
// errnos to RST or ICMP needs no tunnel-specific code.
var (
	ErrRefused     = errors.New("connection refused")
	ErrUnreachable = errors.New("destination unreachable")
	ErrTimeout     = errors.New("dial timed out")
	ErrBadRequest  = errors.New("bad dial request")
)

// ErrProtocol means the far end broke the tunnel protocol (for example no DialResult first).
var ErrProtocol = errors.New("tunnel protocol violation")

// DialError is the far end's answer to a Dial that failed.
type DialError struct {
	Reason  managerv1.DialError
	Message string // the far end's error text, for humans only
	Addr    netip.AddrPort
}

func (e *DialError) Error() string {
	return fmt.Sprintf("tunnel dial %s: %s", e.Addr, e.Message)
}

// Unwrap exposes the sentinel and the errno matching the reason.
func (e *DialError) Unwrap() []error {
	switch e.Reason {
	case managerv1.DialError_DIAL_ERROR_REFUSED:
		return []error{ErrRefused, syscall.ECONNREFUSED}
	case managerv1.DialError_DIAL_ERROR_UNREACHABLE:
		return []error{ErrUnreachable, syscall.EHOSTUNREACH}
	case managerv1.DialError_DIAL_ERROR_TIMEOUT:
		return []error{ErrTimeout, syscall.ETIMEDOUT}
	case managerv1.DialError_DIAL_ERROR_BAD_REQUEST:
		return []error{ErrBadRequest}
	}
	return nil
}

// reasonOf classifies a local dial error for the DialResult sent to the client.
func reasonOf(err error) managerv1.DialError {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return managerv1.DialError_DIAL_ERROR_REFUSED
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return managerv1.DialError_DIAL_ERROR_UNREACHABLE
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
		return managerv1.DialError_DIAL_ERROR_TIMEOUT
	case errors.Is(err, ErrBadRequest):
		return managerv1.DialError_DIAL_ERROR_BAD_REQUEST
	}
	return managerv1.DialError_DIAL_ERROR_UNSPECIFIED
}

// isRefused reports an ICMP port unreachable surfaced on a connected UDP socket.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
