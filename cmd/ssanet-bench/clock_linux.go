package main

import (
	"syscall"
	"time"
	"unsafe"
)

// Linux's clocks of CPU time, to the nanosecond (getrusage moves by scheduler ticks).
const (
	clockProcessCPU = 2 // CLOCK_PROCESS_CPUTIME_ID: every thread of the process, GC included
	clockThreadCPU  = 3 // CLOCK_THREAD_CPUTIME_ID: the calling thread
)

// cpuClock reads one of the clocks above; it panics if the kernel refuses, which Linux does
// not for these two.
func cpuClock(id uintptr) time.Duration {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		panic(errno)
	}
	return time.Duration(ts.Nano())
}
