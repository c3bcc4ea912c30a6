package main

import "syscall"

// childAttr makes the docker CLI that teledock runs get SIGTERM when teledock dies, even by
// SIGKILL: docker passes it on to the container (its sig-proxy), so a killed `intercept
// --docker-run` does not leave its handler running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
