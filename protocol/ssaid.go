package protocol

import (
	"errors"
	"fmt"
)

// MaxSSAIDLen is the longest SSA ID, in bytes. An agent's own IDs are "ssa-" and 24 hex
// digits (28 bytes); an operator may choose one in a template.
const MaxSSAIDLen = 64

// ErrBadSSAID means an SSA ID breaks the grammar of SSA IDs: 1 to MaxSSAIDLen lower-case
// letters, digits and hyphens, starting with a letter or a digit. IDs name stored records,
// log lines and, through them, files: no ID can hold a path separator, a dot, a space or a
// control character.
var ErrBadSSAID = errors.New("protocol: bad SSA ID")

// CheckSSAID checks id against the grammar of SSA IDs (see ErrBadSSAID). Every decoder of a
// message, document or stored record that carries an SSA ID calls it.
func CheckSSAID(id string) error {
	if problem := nameProblem(id, MaxSSAIDLen); problem != "" {
		return fmt.Errorf("%w: %s", ErrBadSSAID, problem)
	}
	return nil
}

// nameProblem says how s breaks the grammar of the names that may end up in file names and
// keys (SSA IDs, key IDs): 1 to max lower-case letters, digits and hyphens, starting with a
// letter or a digit. It is "" when s is such a name.
func nameProblem(s string, max int) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > max:
		return fmt.Sprintf("%d bytes, limit %d", len(s), max)
	case s[0] == '-':
		return fmt.Sprintf("%q starts with a hyphen (it must start with a letter or a digit)", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Sprintf("%q has %q at byte %d (only a-z, 0-9 and - are allowed)", s, c, i)
		}
	}
	return ""
}
