package policy

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net/netip"
)

// CryptoPAn is the prefix-preserving address anonymisation of Xu, Fan, Ammar and Moon
// ("Prefix-Preserving IP Address Anonymization", ICNP 2002), with AES-128 as the
// pseudo-random function, as in the original Crypto-PAn distribution: of the 32-byte key,
// the first 16 bytes are the AES key and the last 16, encrypted once, are the pad. Bit i of
// the output is bit i of the input XOR the first bit of AES(the input's first i bits followed
// by the pad's remaining bits). IPv6 addresses use the same construction over 128 bits; an
// IPv4 address fills the first 32 bits of the block and the rest of the block is the pad, as
// in the original.
//
// Two addresses that share a k-bit prefix map to addresses that share a k-bit prefix.
// A CryptoPAn is safe for concurrent use.
type CryptoPAn struct {
	block cipher.Block
	pad   [16]byte
}

// NewCryptoPAn returns the anonymiser of a 32-byte key.
func NewCryptoPAn(key []byte) (*CryptoPAn, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: cryptopan key is %d bytes, want 32", ErrKey, len(key))
	}
	b, err := aes.NewCipher(key[:16])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	c := &CryptoPAn{block: b}
	b.Encrypt(c.pad[:], key[16:])
	return c, nil
}

// Anonymize returns the anonymised address of a. An IPv4-mapped IPv6 address is anonymised
// as a 128-bit address; a zone is dropped.
func (c *CryptoPAn) Anonymize(a netip.Addr) netip.Addr {
	if a.Is4() {
		b := a.As4()
		var orig [16]byte
		copy(orig[:], b[:])
		r := c.anon(orig, 32)
		return netip.AddrFrom4([4]byte(r[:4]))
	}
	return netip.AddrFrom16(c.anon(a.As16(), 128))
}

func (c *CryptoPAn) anon(orig [16]byte, nbits int) [16]byte {
	var in, out, flips [16]byte
	for pos := range nbits {
		in = c.pad
		full := pos / 8
		copy(in[:full], orig[:full])
		if r := pos % 8; r != 0 {
			m := byte(0xff << (8 - r))
			in[full] = orig[full]&m | c.pad[full]&^m
		}
		c.block.Encrypt(out[:], in[:])
		flips[full] |= (out[0] >> 7) << (7 - pos%8)
	}
	for i := range nbits / 8 {
		flips[i] ^= orig[i]
	}
	return flips
}
