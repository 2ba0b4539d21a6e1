//go:build !linux

package main

import "syscall"

// childProcAttr puts a testnet agent in its own process group (Ctrl-C is testnet's to pass
// on).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
