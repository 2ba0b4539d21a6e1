package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Syslog transports (SyslogConfig.Network).
const (
	NetUDP  = "udp"  // RFC 5426: one message per datagram, no confirmation
	NetTCP  = "tcp"  // RFC 6587 octet counting, no confirmation
	NetTLS  = "tls"  // RFC 5425: octet counting over TLS, no confirmation
	NetRELP = "relp" // rsyslog's RELP: every message confirmed by the receiver
)

// Defaults of SyslogConfig.
const (
	DefaultFacility      = 13   // log audit
	DefaultSeverity      = 6    // informational, for a record that has no severity of its own
	DefaultMaxUDPMessage = 8192 // rsyslog's default maxMessageSize; RFC 5426 §3.2 asks 2048 of a receiver
	MaxUDPMessage        = 65507
	DefaultRELPWindow    = 128
)

// Errors of the syslog writer.
var (
	// ErrSyslogConfig means a syslog sink's configuration is not one it can work with.
	ErrSyslogConfig = errors.New("sink: syslog config")
	// ErrRELPRefused means a RELP receiver answered a command with something else than 200.
	ErrRELPRefused = errors.New("sink: RELP receiver refused")
	// ErrReceiverGone means the receiver closed the connection: what was sent on it since the
	// last chunk it certainly had is sent again on a new connection.
	ErrReceiverGone = errors.New("sink: syslog receiver closed the connection")
)

// SyslogConfig configures a Syslog writer.
type SyslogConfig struct {
	Network, Address string
	// Facility (0..23) of the PRI. 0 is kern, a valid facility, so there is no default here:
	// the agent's config sets DefaultFacility unless the operator chose one.
	Facility int
	// Severity (0..7) of every message, or -1: the record's own severity where its format has
	// one (recordSeverity), DefaultSeverity otherwise.
	Severity int
	// SDID, when set (name@enterprise-number), adds a structured-data element with the SSA,
	// the sequence number and the format of the record; the record itself, as JSON, is the
	// MSG either way, with ssa_id and seq.
	SDID string
	// MaxMessage bounds a UDP message (header included); a longer one is truncated and counted
	// (Truncated). Default DefaultMaxUDPMessage.
	MaxMessage int
	// TLS is the client configuration of tls (RFC 5425).
	TLS *tls.Config
	// Window is how many RELP messages may wait for their answer (DefaultRELPWindow).
	Window int
}

// Validate checks the config and fills in its defaults.
func (c *SyslogConfig) Validate() error {
	switch c.Network {
	case NetUDP, NetTCP, NetTLS, NetRELP:
	default:
		return fmt.Errorf("%w: network %q: use udp, tcp, tls or relp", ErrSyslogConfig, c.Network)
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("%w: address %q: want host:port: %w", ErrSyslogConfig, c.Address, err)
	}
	if c.Facility < 0 || c.Facility > 23 {
		return fmt.Errorf("%w: facility %d: want 0..23", ErrSyslogConfig, c.Facility)
	}
	if c.Severity < -1 || c.Severity > 7 {
		return fmt.Errorf("%w: severity %d: want 0..7, or the record's own", ErrSyslogConfig, c.Severity)
	}
	if c.SDID != "" && !validSDID(c.SDID) {
		return fmt.Errorf("%w: sd-id %q: want NAME@ENTERPRISE-NUMBER (RFC 5424 §7.2.2), e.g. ssanet@12345 with your organisation's private enterprise number", ErrSyslogConfig, c.SDID)
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxUDPMessage
	}
	if c.MaxMessage < 480 || c.MaxMessage > MaxUDPMessage {
		return fmt.Errorf("%w: max-message %d: want 480..%d (RFC 5426 §3.2)", ErrSyslogConfig, c.MaxMessage, MaxUDPMessage)
	}
	if c.Window == 0 {
		c.Window = DefaultRELPWindow
	}
	if c.Window < 1 || c.Window > 1024 {
		return fmt.Errorf("%w: window %d: want 1..1024", ErrSyslogConfig, c.Window)
	}
	if c.Network == NetTLS && c.TLS == nil {
		c.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return nil
}

// validSDID: SD-NAME "@" digits, SD-NAME being 1..32 printable US-ASCII but =, SP, ] and ".
func validSDID(id string) bool {
	name, num, ok := strings.Cut(id, "@")
	if !ok || len(id) > 32 || name == "" || num == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' || c == '@' {
			return false
		}
	}
	for i, c := range []byte(num) {
		if (c < '0' || c > '9') && (c != '.' || i == 0 || i == len(num)-1) {
			return false
		}
	}
	return true
}

// TLSConfig builds the client side of RFC 5425 from PEM files: the CA that signed the
// receiver's certificate (the system's roots when ca is empty), and this agent's certificate
// and key when the receiver asks for one (both or neither).
func TLSConfig(ca, cert, key, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%w: read tls-ca: %w", ErrSyslogConfig, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: tls-ca %s holds no PEM certificate", ErrSyslogConfig, ca)
		}
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%w: tls-cert and tls-key go together", ErrSyslogConfig)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%w: tls-cert/tls-key: %w", ErrSyslogConfig, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// Syslog sends each record as an RFC 5424 message over UDP, TCP, TLS or RELP. It dials on
// the first Write, and again after a failed one.
//
// What a Write that returns nil means depends on the transport. RELP: the receiver confirmed
// every message. TCP and TLS: the receiver's TCP took every byte and the connection was open
// afterwards; since the receiver can still close it with messages unread, the writer keeps
// the chunk it last wrote and sends it again before anything else when it finds the
// connection closed (a receiver's restart). UDP: every datagram left this host.
type Syslog struct {
	cfg       SyslogConfig
	host      string
	conn      net.Conn
	relp      *relpConn
	prev      []Record          // tcp, tls: the last chunk written on conn
	acked     map[string]uint64 // relp: by SSA, the last record the receiver confirmed
	truncated atomic.Uint64
}

// NewSyslog returns a writer to the receiver cfg names; cfg must be valid (Validate).
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Syslog{cfg: cfg, host: hostname(), acked: map[string]uint64{}}, nil
}

// Truncated is how many UDP messages were cut to the configured maximum size.
func (s *Syslog) Truncated() uint64 { return s.truncated.Load() }

// Confirms reports whether the receiver confirms what a Write took: over RELP alone.
func (s *Syslog) Confirms() bool { return s.cfg.Network == NetRELP }

// hostname is this host's name as RFC 5424 allows it (1..255 printable US-ASCII), or "-".
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" || len(h) > 255 {
		return "-"
	}
	for _, c := range []byte(h) {
		if c < 33 || c > 126 {
			return "-"
		}
	}
	return h
}

// Write sends recs one message at a time.
func (s *Syslog) Write(ctx context.Context, recs []Record) error {
	switch s.cfg.Network {
	case NetRELP:
		return s.writeRELP(ctx, recs)
	case NetUDP:
		return s.writeUDP(ctx, recs)
	}
	return s.writeStream(ctx, recs)
}

func (s *Syslog) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: writeTimeout}
	network := s.cfg.Network
	switch network {
	case NetTLS:
		td := tls.Dialer{NetDialer: &d, Config: s.cfg.TLS}
		return td.DialContext(ctx, "tcp", s.cfg.Address)
	case NetRELP:
		network = "tcp"
	}
	return d.DialContext(ctx, network, s.cfg.Address)
}

func (s *Syslog) drop() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	s.relp = nil
}

// Close closes the connection, if any; a RELP session is closed as the protocol asks.
func (s *Syslog) Close() error {
	if s.relp != nil {
		s.relp.close()
	}
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.relp = nil, nil
	return err
}

func (s *Syslog) writeUDP(ctx context.Context, recs []Record) error {
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
	}
	var msg []byte
	for _, r := range recs {
		var err error
		if msg, err = s.appendMessage(msg[:0], r); err != nil {
			return err
		}
		if len(msg) > s.cfg.MaxMessage {
			msg = truncateUTF8(msg, s.cfg.MaxMessage)
			s.truncated.Add(1)
		}
		if err := s.send(msg); err != nil {
			return err
		}
	}
	return nil
}

// truncateUTF8 cuts b to at most n bytes, not inside a UTF-8 sequence.
func truncateUTF8(b []byte, n int) []byte {
	b = b[:n]
	for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
		r, size := utf8.DecodeLastRune(b)
		if r != utf8.RuneError || size != 1 {
			break
		}
		b = b[:len(b)-1]
	}
	return b
}

// writeStream sends recs octet-counted (RFC 6587 §3.4.1) over TCP or TLS.
func (s *Syslog) writeStream(ctx context.Context, recs []Record) error {
	if s.conn != nil && !alive(s.conn) {
		s.drop() // the receiver went away since the last chunk: it may not have read all of it
	}
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
		if err := s.writeFramed(s.prev); err != nil {
			return err
		}
	}
	if err := s.writeFramed(recs); err != nil {
		return err
	}
	s.prev = recs
	// Wait until the receiver's TCP took it all, so that a closed connection shows now.
	deadline := time.Now().Add(writeTimeout)
	for unsent(s.conn) > 0 {
		if !alive(s.conn) {
			s.drop()
			return ErrReceiverGone
		}
		if time.Now().After(deadline) {
			s.drop()
			return fmt.Errorf("sink: syslog receiver %s took no data for %s", s.cfg.Address, writeTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	if !alive(s.conn) {
		s.drop()
		return ErrReceiverGone
	}
	return nil
}

func (s *Syslog) writeFramed(recs []Record) error {
	var msg []byte
	for _, r := range recs {
		body, err := s.appendMessage(nil, r)
		if err != nil {
			return err
		}
		msg = strconv.AppendInt(msg[:0], int64(len(body)), 10)
		msg = append(append(msg, ' '), body...)
		if err := s.send(msg); err != nil {
			return err
		}
	}
	return nil
}

// alive reports whether the receiver has not closed c: a receiver of syslog sends nothing,
// so a read that does not time out at once is its end (or bytes it should not have sent,
// which are dropped).
func alive(c net.Conn) bool {
	if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return false
	}
	var b [256]byte
	_, err := c.Read(b[:])
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}

// send writes one message; after a failure the connection is dropped, to be dialled again.
func (s *Syslog) send(msg []byte) error {
	err := s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err == nil {
		_, err = s.conn.Write(msg)
	}
	if err != nil {
		s.drop()
	}
	return err
}

// appendMessage appends r as an RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME ssanet - record [SD-ID ssa="…" seq="…" format="…"] {record as JSON}
//
// with a timestamp of six fractional digits (RFC 5424 §6.2.3.1 allows no more) and the
// structured data only when an SD-ID is configured.
func (s *Syslog) appendMessage(b []byte, r Record) ([]byte, error) {
	sev := s.cfg.Severity
	if sev < 0 {
		if v, ok := recordSeverity(r); ok {
			sev = v
		} else {
			sev = DefaultSeverity
		}
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(s.cfg.Facility*8+sev), 10)
	b = append(b, ">1 "...)
	b = r.Received.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = append(b, s.host...)
	b = append(b, " ssanet - record "...)
	if s.cfg.SDID == "" {
		b = append(b, '-')
	} else {
		b = append(b, '[')
		b = append(b, s.cfg.SDID...)
		b = appendParam(b, "ssa", r.SSAID)
		b = appendParam(b, "seq", strconv.FormatUint(r.Seq, 10))
		if r.Format != "" {
			b = appendParam(b, "format", r.Format)
		}
		b = append(b, ']')
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(append(b, ' '), body...), nil
}

// appendParam appends ` name="value"`, escaping ", \ and ] (RFC 5424 §6.3.3).
func appendParam(b []byte, name, value string) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=', '"')
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '"', '\\', ']':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// recordSeverity is the syslog severity a record states of itself: the PRI of a syslog
// line, alert.severity of a Suricata EVE alert (1 critical, 2 error, 3 warning, 4 notice),
// Priority of an IDMEFv2 alert (High critical, Medium error, Low warning, Info
// informational). Other formats have none the sink can read without parsing XML.
func recordSeverity(r Record) (int, bool) {
	switch r.Format {
	case "syslog":
		rest, ok := strings.CutPrefix(r.Text, "<")
		end := strings.IndexByte(rest, '>')
		if !ok || end < 1 || end > 3 {
			return 0, false
		}
		pri, err := strconv.Atoi(rest[:end])
		if err != nil || pri < 0 || pri > 191 {
			return 0, false
		}
		return pri % 8, true
	case "eve":
		var v struct {
			Alert struct {
				Severity int `json:"severity"`
			} `json:"alert"`
		}
		if json.Unmarshal(r.Record, &v) != nil || v.Alert.Severity < 1 {
			return 0, false
		}
		return min(v.Alert.Severity+1, 5), true
	case "idmefv2":
		var v struct{ Priority string }
		if json.Unmarshal(r.Record, &v) != nil {
			return 0, false
		}
		sev, ok := map[string]int{"High": 2, "Medium": 3, "Low": 4, "Info": 6}[v.Priority]
		return sev, ok
	}
	return 0, false
}

// writeRELP sends recs as RELP syslog commands, at most Window unanswered, and returns once
// the receiver confirmed each. Records it already confirmed (of a chunk written again after
// a failure) are not sent again.
func (s *Syslog) writeRELP(ctx context.Context, recs []Record) error {
	if s.relp == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
		s.relp = &relpConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
		if err := s.relp.open(); err != nil {
			s.drop()
			return err
		}
	}
	type sent struct {
		txnr uint64
		ssa  string
		seq  uint64
	}
	var window []sent
	confirm := func() error {
		txnr, err := s.relp.answer()
		if err != nil {
			return err
		}
		if txnr != window[0].txnr {
			return fmt.Errorf("%w: answer to transaction %d, want %d", ErrRELPRefused, txnr, window[0].txnr)
		}
		s.acked[window[0].ssa] = max(s.acked[window[0].ssa], window[0].seq)
		window = window[1:]
		return nil
	}
	var msg []byte
	for _, r := range recs {
		if ctx.Err() != nil {
			s.drop()
			return ctx.Err()
		}
		if r.Seq <= s.acked[r.SSAID] {
			continue
		}
		if len(window) == s.cfg.Window {
			if err := s.relp.w.Flush(); err != nil {
				s.drop()
				return err
			}
			if err := confirm(); err != nil {
				s.drop()
				return err
			}
		}
		var err error
		if msg, err = s.appendMessage(msg[:0], r); err != nil {
			return err
		}
		txnr, err := s.relp.command("syslog", msg)
		if err != nil {
			s.drop()
			return err
		}
		window = append(window, sent{txnr, r.SSAID, r.Seq})
	}
	if err := s.relp.w.Flush(); err != nil {
		s.drop()
		return err
	}
	for len(window) > 0 {
		if err := confirm(); err != nil {
			s.drop()
			return err
		}
	}
	return nil
}
