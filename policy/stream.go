package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// RecordReader cuts a stream of one format into raw records, for an enforcement point that
// routes each record to several SSPs.
type RecordReader struct{ s *splitter }

// NewRecordReader reads records of format from r.
func NewRecordReader(r io.Reader, format string) (*RecordReader, error) {
	spec, ok := lookupFormat(format)
	if !ok {
		return nil, refuse(ProblemUnsupportedFormat, "information", "unknown format %q (want one of %v)", format, Formats())
	}
	return &RecordReader{s: newSplitter(r, spec.framing)}, nil
}

// OneRecordPerLine reports whether every record of format is one line (EVE, syslog), so that
// a stream of it can be cut between any two lines.
func OneRecordPerLine(format string) bool {
	spec, ok := lookupFormat(format)
	return ok && spec.framing == frameLine
}

// Next returns the next record. A malformed record is a *BadRecord error, after which Next
// goes on with the following one; an error of the underlying reader (io.EOF at the end) is
// returned as it is. The record is valid until the next call.
func (rr *RecordReader) Next() ([]byte, error) {
	rec, line, off, err := rr.s.next()
	var ioErr *readError
	switch {
	case errors.As(err, &ioErr):
		return nil, ioErr.err
	case err != nil && !errors.Is(err, io.EOF):
		return nil, &BadRecord{Line: line, Offset: off, Err: err}
	}
	return rec, err
}

// Offset is how many bytes of the input were consumed: after Next, up to the end of the
// record (or bad record) it returned; at io.EOF, the whole input. A reader started at that
// byte reads the records that follow, no record twice.
func (rr *RecordReader) Offset() int64 { return rr.s.off }

// readError is an error of the underlying reader, as opposed to a bad record.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

// splitter cuts records out of a stream: lines (EVE, syslog), JSON objects (IDMEFv2, one per
// line or pretty-printed), or XML documents (IDMEF, IODEF: the prolog, one root element and
// what follows it up to the next document). A bad record is returned as an error with its
// position and the splitter goes on after it.
type splitter struct {
	r       *bufio.Reader
	framing framing
	line    int   // line of the next byte, from 1
	off     int64 // offset of the next byte
	buf     []byte
}

func newSplitter(r io.Reader, f framing) *splitter {
	return &splitter{r: bufio.NewReaderSize(r, 64<<10), framing: f, line: 1}
}

func (s *splitter) next() ([]byte, int, int64, error) {
	switch s.framing {
	case frameLine:
		return s.nextLine()
	case frameJSON:
		return s.nextJSON()
	default:
		return s.nextXML()
	}
}

func (s *splitter) nextLine() ([]byte, int, int64, error) {
	for {
		line, off := s.line, s.off
		s.buf = s.buf[:0]
		tooLong := false
		for {
			chunk, err := s.r.ReadSlice('\n')
			s.off += int64(len(chunk))
			if !tooLong {
				if len(s.buf)+len(chunk) > MaxRecordSize+2 {
					tooLong = true
				} else {
					s.buf = append(s.buf, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, line, off, &readError{err}
			}
			if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
				s.line++
			}
			if tooLong {
				return nil, line, off, fmt.Errorf("%w: line over %d bytes", ErrTooLarge, MaxRecordSize)
			}
			if len(s.buf) == 0 && errors.Is(err, io.EOF) {
				return nil, line, off, io.EOF
			}
			break
		}
		rec := bytes.TrimRight(s.buf, "\r\n")
		if len(bytes.TrimSpace(rec)) == 0 {
			continue
		}
		return rec, line, off, nil
	}
}

func (s *splitter) readByte() (byte, error) {
	c, err := s.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, &readError{err}
	}
	s.off++
	if c == '\n' {
		s.line++
	}
	return c, nil
}

// skipSpace consumes white space and returns the first other byte, unread.
func (s *splitter) skipSpace() error {
	for {
		b, err := s.r.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return &readError{err}
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			if _, err := s.readByte(); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// skipLine consumes up to and including the next newline.
func (s *splitter) skipLine() error {
	for {
		c, err := s.readByte()
		if err != nil || c == '\n' {
			return err
		}
	}
}

// keep appends c to the record unless it is over the limit.
func (s *splitter) keep(c byte) {
	if len(s.buf) <= MaxRecordSize {
		s.buf = append(s.buf, c)
	}
}

func (s *splitter) result(line int, off int64, err error) ([]byte, int, int64, error) {
	if errors.Is(err, io.EOF) {
		return nil, line, off, fmt.Errorf("%w: truncated at the end of the input", ErrFormat)
	}
	if err != nil {
		return nil, line, off, err
	}
	if len(s.buf) > MaxRecordSize {
		return nil, line, off, fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxRecordSize)
	}
	return s.buf, line, off, nil
}

func (s *splitter) nextJSON() ([]byte, int, int64, error) {
	if err := s.skipSpace(); err != nil {
		return nil, s.line, s.off, err
	}
	line, off := s.line, s.off
	s.buf = s.buf[:0]
	c, err := s.readByte()
	if err != nil {
		return nil, line, off, err
	}
	if c != '{' {
		err := s.skipLine()
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, line, off, err
		}
		return nil, line, off, fmt.Errorf("%w: want '{', got %q", ErrFormat, c)
	}
	s.keep(c)
	depth, inStr := 1, false
	for depth > 0 {
		c, err := s.readByte()
		if err != nil {
			return s.result(line, off, err)
		}
		s.keep(c)
		switch {
		case inStr && c == '\\':
			c, err := s.readByte()
			if err != nil {
				return s.result(line, off, err)
			}
			s.keep(c)
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		}
	}
	return s.result(line, off, nil)
}

// nextXML reads one document: everything up to the end of the first root element.
func (s *splitter) nextXML() ([]byte, int, int64, error) {
	if err := s.skipSpace(); err != nil {
		return nil, s.line, s.off, err
	}
	line, off := s.line, s.off
	s.buf = s.buf[:0]
	var doc xmlProgress
	for {
		if doc.depth > 0 && s.nextDocument(doc.root) {
			return nil, line, off, fmt.Errorf("%w: unclosed element before the next document", ErrFormat)
		}
		c, err := s.readByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(bytes.TrimSpace(s.buf)) == 0 {
				return nil, line, off, io.EOF
			}
			return s.result(line, off, err)
		}
		if c != '<' {
			if err := s.xmlText(c, doc.depth); err != nil {
				return nil, line, off, err
			}
			continue
		}
		done, err := s.xmlTag(&doc)
		if err != nil {
			return s.result(line, off, err)
		}
		if done {
			return s.result(line, off, nil)
		}
	}
}

// xmlProgress is how far nextXML is into a document.
type xmlProgress struct {
	depth    int    // elements open
	seenRoot bool   // the root element has started
	root     []byte // its name, once seen
}

// xmlText keeps a byte of text. Outside the root element only white space may be; other
// text is an error, and the input is skipped to the next markup.
func (s *splitter) xmlText(c byte, depth int) error {
	if depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n' {
		err := s.skipTo('<')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("%w: text outside an element", ErrFormat)
	}
	s.keep(c)
	return nil
}

// xmlTag reads a markup construct whose '<' has been read and reports whether it ended the
// document (closed its root element, or was an empty root).
func (s *splitter) xmlTag(doc *xmlProgress) (bool, error) {
	tag := len(s.buf)
	s.keep('<')
	kind, err := s.xmlMarkup()
	if err != nil {
		return false, err
	}
	if !doc.seenRoot && (kind == markStart || kind == markEmpty) && tag < len(s.buf) {
		doc.root = tagName(s.buf[tag+1:])
	}
	switch kind {
	case markStart:
		doc.depth++
		doc.seenRoot = true
	case markEnd:
		doc.depth--
	case markEmpty:
		doc.seenRoot = true
	}
	return doc.seenRoot && doc.depth <= 0, nil
}

// nextDocument reports whether the input continues with an XML declaration or a start tag
// of the root element: a new document, so the current one is unclosed. Root elements of the
// formats never nest.
func (s *splitter) nextDocument(root []byte) bool {
	b, _ := s.r.Peek(len(root) + 2)
	if bytes.HasPrefix(b, []byte("<?xml")) {
		return true
	}
	if len(root) == 0 || len(b) < len(root)+2 || b[0] != '<' || !bytes.Equal(b[1:1+len(root)], root) {
		return false
	}
	switch b[len(root)+1] {
	case ' ', '\t', '\r', '\n', '>', '/':
		return true
	}
	return false
}

func tagName(b []byte) []byte {
	i := bytes.IndexAny(b, " \t\r\n/>")
	if i < 0 {
		return nil
	}
	return bytes.Clone(b[:i])
}

func (s *splitter) skipTo(stop byte) error {
	for {
		b, err := s.r.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return &readError{err}
		}
		if b[0] == stop {
			return nil
		}
		if _, err := s.readByte(); err != nil {
			return err
		}
	}
}

type markup uint8

const (
	markOther markup = iota // declaration, comment, CDATA, processing instruction
	markStart
	markEnd
	markEmpty
)

// xmlMarkup reads the rest of a markup construct after '<' and says what it was.
func (s *splitter) xmlMarkup() (markup, error) {
	c, err := s.readByte()
	if err != nil {
		return 0, err
	}
	s.keep(c)
	switch c {
	case '?':
		return markOther, s.until("?>")
	case '!':
		b, _ := s.r.Peek(7)
		switch {
		case bytes.HasPrefix(b, []byte("--")):
			return markOther, s.until("-->")
		case bytes.HasPrefix(b, []byte("[CDATA[")):
			return markOther, s.until("]]>")
		}
		// A declaration, with an optional internal subset in brackets.
		depth := 0
		for {
			c, err := s.readByte()
			if err != nil {
				return 0, err
			}
			s.keep(c)
			switch c {
			case '[':
				depth++
			case ']':
				depth--
			case '>':
				if depth <= 0 {
					return markOther, nil
				}
			}
		}
	case '/':
		return markEnd, s.until(">")
	}
	var quote byte
	prev := c
	for {
		c, err := s.readByte()
		if err != nil {
			return 0, err
		}
		s.keep(c)
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			if prev == '/' {
				return markEmpty, nil
			}
			return markStart, nil
		}
		prev = c
	}
}

// until reads up to and including end (at most 3 bytes).
func (s *splitter) until(end string) error {
	var last [3]byte
	for {
		c, err := s.readByte()
		if err != nil {
			return err
		}
		s.keep(c)
		last[0], last[1], last[2] = last[1], last[2], c
		if string(last[3-len(end):]) == end {
			return nil
		}
	}
}
