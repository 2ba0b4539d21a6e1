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
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrBadSSAID)
	case len(id) > MaxSSAIDLen:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadSSAID, len(id), MaxSSAIDLen)
	case id[0] == '-':
		return fmt.Errorf("%w: %q starts with a hyphen (an ID starts with a letter or a digit)", ErrBadSSAID, id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("%w: %q has %q at byte %d (an ID holds only a-z, 0-9 and -)", ErrBadSSAID, id, c, i)
		}
	}
	return nil
}
