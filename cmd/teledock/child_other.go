//go:build !linux

package main

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere a handler left by a killed
// teledock is removed by the next run of its intercept (removeStaleHandler).
func childAttr() *syscall.SysProcAttr { return nil }
