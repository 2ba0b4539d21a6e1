package main

import "syscall"

// childProcAttr puts a testnet agent in its own process group (Ctrl-C is testnet's to pass
// on) and has the kernel stop it if testnet itself dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
