package taxii

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// ErrConfig means the taxii section of the configuration cannot be used.
var ErrConfig = errors.New("taxii: configuration")

// Limits of a page.
const (
	// DefaultMaxPage is the most objects a page holds when the configuration sets no max-page.
	DefaultMaxPage = 1000
	// maxMaxPage is the highest max-page the configuration may set.
	maxMaxPage = 10000
	// maxSecret is the largest secret file read.
	maxSecret = 4096
)

// Config is the taxii section of the agent's configuration. The server runs only when Listen
// is set.
type Config struct {
	// Listen is the TCP address the server listens on (host:port).
	Listen string `yaml:"listen,omitempty"`
	// TLSCert and TLSKey are the PEM files of the server's certificate chain and key
	// (relative to the agent's home); the server speaks only HTTPS.
	TLSCert string `yaml:"tls-cert,omitempty"`
	TLSKey  string `yaml:"tls-key,omitempty"`
	// Title is the discovery and API root title ("ssanet" if empty).
	Title string `yaml:"title,omitempty"`
	// Users are who may connect, by name.
	Users map[string]User `yaml:"users,omitempty"`
	// Collections are the SSAs the server exposes, one collection each.
	Collections []Collection `yaml:"collections,omitempty"`
	// MaxPage caps the objects of one page, whatever limit a client asks for (default
	// DefaultMaxPage).
	MaxPage int `yaml:"max-page,omitempty"`
}

// User is one who may connect: with HTTP basic authentication (its name and the password in
// PasswordFile) or with a bearer token (the token in TokenFile), or either.
type User struct {
	PasswordFile string `yaml:"password-file,omitempty"`
	TokenFile    string `yaml:"token-file,omitempty"`
	// Audience is how far from the requester the user stands, as the SSAs' redistribution
	// levels count it: organisation (the default), community or any. A collection is offered
	// to the user only if its SSA's redistribution reaches that far.
	Audience string `yaml:"audience,omitempty"`
}

// Collection exposes one SSA's records.
type Collection struct {
	SSA         string `yaml:"ssa"`
	Title       string `yaml:"title,omitempty"`
	Description string `yaml:"description,omitempty"`
	// Readers are the names of the users who may read the collection.
	Readers []string `yaml:"readers,omitempty"`
}

// Enabled reports whether the server runs.
func (c *Config) Enabled() bool { return c != nil && c.Listen != "" }

// Validate checks the section and says what to fix; a section without listen is not checked
// further than its shape.
func (c *Config) Validate() error {
	if !c.Enabled() {
		if c != nil && (len(c.Users) > 0 || len(c.Collections) > 0) {
			return fmt.Errorf("%w: users or collections without listen: set taxii.listen (host:port) to serve them", ErrConfig)
		}
		return nil
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return fmt.Errorf("%w: tls-cert and tls-key are required: the server speaks only HTTPS, and its clients send passwords and tokens", ErrConfig)
	}
	if c.MaxPage < 0 || c.MaxPage > maxMaxPage {
		return fmt.Errorf("%w: max-page %d: want 1 to %d (0: %d)", ErrConfig, c.MaxPage, maxMaxPage, DefaultMaxPage)
	}
	if len(c.Users) == 0 {
		return fmt.Errorf("%w: no users: add at least one under taxii.users with a password-file or token-file", ErrConfig)
	}
	for name, u := range c.Users {
		switch {
		case name == "" || strings.ContainsAny(name, ":\x00\r\n") || len(name) > 128:
			return fmt.Errorf("%w: user name %q: want 1 to 128 characters, no colon or control character", ErrConfig, name)
		case u.PasswordFile == "" && u.TokenFile == "":
			return fmt.Errorf("%w: user %s: set password-file or token-file", ErrConfig, name)
		case u.Audience != "" && (u.Audience == "none" || !slices.Contains(protocol.RedistributionLevels, u.Audience)):
			return fmt.Errorf("%w: user %s: audience %q: want %s, %s or %s", ErrConfig, name, u.Audience,
				policy.RecipientOrganisation, policy.RecipientCommunity, policy.RecipientAny)
		}
	}
	seen := map[string]bool{}
	for i, col := range c.Collections {
		if err := protocol.CheckSSAID(col.SSA); err != nil {
			return fmt.Errorf("%w: collection %d: ssa: %w", ErrConfig, i+1, err)
		}
		if seen[col.SSA] {
			return fmt.Errorf("%w: collection %d: SSA %s is exposed twice: keep one entry", ErrConfig, i+1, col.SSA)
		}
		seen[col.SSA] = true
		if len(col.Readers) == 0 {
			return fmt.Errorf("%w: collection of SSA %s: no readers: list the users who may read it", ErrConfig, col.SSA)
		}
		for _, r := range col.Readers {
			if _, ok := c.Users[r]; !ok {
				return fmt.Errorf("%w: collection of SSA %s: reader %q is not under taxii.users", ErrConfig, col.SSA, r)
			}
		}
	}
	return nil
}

// audience is the user's audience, organisation by default.
func (u User) audience() string {
	if u.Audience == "" {
		return policy.RecipientOrganisation
	}
	return u.Audience
}

// readSecret reads a secret file (relative to home): its content without the trailing line
// end, which must not be empty.
func readSecret(home, path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(home, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: secret: %w", ErrConfig, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecret+1))
	n := len(b)
	if err != nil {
		return nil, fmt.Errorf("%w: secret %s: %w", ErrConfig, path, err)
	}
	if n > maxSecret {
		return nil, fmt.Errorf("%w: secret %s is over %d bytes: is it the right file?", ErrConfig, path, maxSecret)
	}
	s := []byte(strings.TrimRight(string(b[:n]), "\r\n"))
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: secret %s is empty: write the password or token into it", ErrConfig, path)
	}
	return s, nil
}

// CheckFiles checks what the server reads when it starts, for `ssanet config check`: each
// secret file (relative to home) and the TLS certificate and key.
func (c *Config) CheckFiles(home string) error {
	if !c.Enabled() {
		return nil
	}
	for name, u := range c.Users {
		for _, path := range []string{u.PasswordFile, u.TokenFile} {
			if path == "" {
				continue
			}
			if _, err := readSecret(home, path); err != nil {
				return fmt.Errorf("user %s: %w", name, err)
			}
		}
	}
	if _, err := tls.LoadX509KeyPair(abs(home, c.TLSCert), abs(home, c.TLSKey)); err != nil {
		return fmt.Errorf("%w: tls-cert and tls-key: %w", ErrConfig, err)
	}
	return nil
}
