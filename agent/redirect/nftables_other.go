//go:build !linux

package redirect

import "errors"

// ErrUnsupported is returned off Linux: nftables exists only there.
var ErrUnsupported = errors.New("redirect: nftables needs Linux")

// Install fails off Linux.
func Install([]Redirect) error { return ErrUnsupported }

// Installed fails off Linux.
func Installed() ([]Redirect, error) { return nil, ErrUnsupported }
