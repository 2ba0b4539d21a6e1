package sink

import (
	"crypto/tls"
	"net"
	"syscall"
	"unsafe"
)

// unsent is how many bytes written to c its peer's TCP has not acknowledged yet (SIOCOUTQ),
// or 0 when that cannot be told.
func unsent(c net.Conn) int {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var n int32
	var errno syscall.Errno
	if raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}) != nil || errno != 0 {
		return 0
	}
	return int(n)
}
