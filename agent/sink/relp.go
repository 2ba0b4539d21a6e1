package sink

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// RELP (the Reliable Event Logging Protocol of rsyslog's librelp): every frame is
//
//	TXNR SP COMMAND SP DATALEN [SP DATA] LF
//
// The client opens a session with an "open" command offering relp_version and the commands
// it will use, sends each message as a "syslog" command under the next transaction number
// (1..999,999,999, then 1 again) and the server answers each with "TXNR rsp LEN 200 OK";
// "close" ends the session. A server about to go away may send "0 serverclose 0".

const (
	relpMaxTxnr  = 999_999_999
	relpMaxFrame = 128 << 10 // an answer is a status line and a few offers
	relpOffers   = "relp_version=0\nrelp_software=ssanet\ncommands=syslog"
)

// relpConn is one RELP session.
type relpConn struct {
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	txnr uint64 // of the last command sent
}

// command buffers one command and returns its transaction number.
func (rc *relpConn) command(cmd string, data []byte) (uint64, error) {
	rc.txnr++
	if rc.txnr > relpMaxTxnr {
		rc.txnr = 1
	}
	if err := rc.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return 0, err
	}
	var head []byte
	head = strconv.AppendUint(head, rc.txnr, 10)
	head = append(append(append(head, ' '), cmd...), ' ')
	head = strconv.AppendInt(head, int64(len(data)), 10)
	if len(data) > 0 {
		head = append(head, ' ')
	}
	if _, err := rc.w.Write(head); err != nil {
		return 0, err
	}
	if _, err := rc.w.Write(data); err != nil {
		return 0, err
	}
	return rc.txnr, rc.w.WriteByte('\n')
}

// open opens the session.
func (rc *relpConn) open() error {
	txnr, err := rc.command("open", []byte(relpOffers))
	if err == nil {
		err = rc.w.Flush()
	}
	if err != nil {
		return err
	}
	got, err := rc.answer()
	if err == nil && got != txnr {
		err = fmt.Errorf("%w: open answered as transaction %d", ErrRELPRefused, got)
	}
	return err
}

// answer reads the next answer and returns its transaction number if it says 200.
func (rc *relpConn) answer() (uint64, error) {
	if err := rc.c.SetReadDeadline(time.Now().Add(writeTimeout)); err != nil {
		return 0, err
	}
	txnr, cmd, data, err := rc.readFrame()
	if err != nil {
		return 0, err
	}
	switch {
	case cmd == "serverclose":
		return 0, ErrReceiverGone
	case cmd != "rsp":
		return 0, fmt.Errorf("%w: unexpected command %q", ErrRELPRefused, cmd)
	case !bytes.HasPrefix(data, []byte("200")):
		line, _, _ := bytes.Cut(data, []byte("\n"))
		return 0, fmt.Errorf("%w: transaction %d: %q", ErrRELPRefused, txnr, line)
	}
	return txnr, nil
}

func (rc *relpConn) readFrame() (txnr uint64, cmd string, data []byte, err error) {
	field := func(ends string) (string, byte, error) {
		var b []byte
		for len(b) < 32 {
			c, err := rc.r.ReadByte()
			if err != nil {
				return "", 0, err
			}
			if bytes.IndexByte([]byte(ends), c) >= 0 {
				return string(b), c, nil
			}
			b = append(b, c)
		}
		return "", 0, fmt.Errorf("%w: malformed frame header", ErrRELPRefused)
	}
	t, _, err := field(" ")
	if err != nil {
		return 0, "", nil, err
	}
	if txnr, err = strconv.ParseUint(t, 10, 64); err != nil {
		return 0, "", nil, fmt.Errorf("%w: transaction number %q", ErrRELPRefused, t)
	}
	if cmd, _, err = field(" "); err != nil {
		return 0, "", nil, err
	}
	l, end, err := field(" \n")
	if err != nil {
		return 0, "", nil, err
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 || n > relpMaxFrame {
		return 0, "", nil, fmt.Errorf("%w: data length %q", ErrRELPRefused, l)
	}
	if end == '\n' {
		if n != 0 {
			return 0, "", nil, fmt.Errorf("%w: data length %d without data", ErrRELPRefused, n)
		}
		return txnr, cmd, nil, nil
	}
	data = make([]byte, n+1)
	if _, err := io.ReadFull(rc.r, data); err != nil {
		return 0, "", nil, err
	}
	if data[n] != '\n' {
		return 0, "", nil, fmt.Errorf("%w: frame without trailer", ErrRELPRefused)
	}
	return txnr, cmd, data[:n], nil
}

// close ends the session politely, as far as the receiver answers within a moment.
func (rc *relpConn) close() {
	if _, err := rc.command("close", nil); err != nil || rc.w.Flush() != nil {
		return
	}
	if rc.c.SetReadDeadline(time.Now().Add(time.Second)) == nil {
		_, _, _, _ = rc.readFrame()
	}
}
