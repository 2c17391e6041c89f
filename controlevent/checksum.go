package controlevent

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// ChecksumPrefix is the algorithm prefix of every checksum.
const ChecksumPrefix = "sha256:"

// Checksum returns "sha256:<hex>" of b.
func Checksum(b []byte) string {
	sum := sha256.Sum256(b)
	return ChecksumPrefix + hex.EncodeToString(sum[:])
}

// ChecksumOf formats a finished sha256 hash as a checksum string. Use it with
// NewHash to checksum a stream without holding it in memory.
func ChecksumOf(h hash.Hash) string {
	return ChecksumPrefix + hex.EncodeToString(h.Sum(nil))
}

// NewHash returns the hash function checksums are computed with.
func NewHash() hash.Hash { return sha256.New() }

// ParseChecksum reports whether s is a well-formed checksum:
// "sha256:" followed by exactly 64 lowercase hex digits. The error wraps
// ErrInvalid.
func ParseChecksum(s string) error {
	hexPart, ok := strings.CutPrefix(s, ChecksumPrefix)
	if !ok {
		return fmt.Errorf("checksum %q does not start with %q: %w", truncate(s), ChecksumPrefix, ErrInvalid)
	}
	if len(hexPart) != sha256.Size*2 {
		return fmt.Errorf("checksum %q has %d hex digits, want %d: %w", truncate(s), len(hexPart), sha256.Size*2, ErrInvalid)
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("checksum %q has a character that is not lowercase hex at offset %d: %w", truncate(s), len(ChecksumPrefix)+i, ErrInvalid)
		}
	}
	return nil
}

// VerifyChecksum reports whether b hashes to want. It returns an error
// wrapping ErrChecksumMismatch when the bytes differ, and one wrapping
// ErrInvalid when want is malformed.
func VerifyChecksum(b []byte, want string) error {
	if err := ParseChecksum(want); err != nil {
		return err
	}
	got := Checksum(b)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return fmt.Errorf("controlevent: payload of %d bytes has checksum %s, want %s: %w", len(b), got, want, ErrChecksumMismatch)
	}
	return nil
}

// ErrChecksumMismatch is wrapped by VerifyChecksum when the bytes do not
// match the expected checksum: the payload is corrupt or not the one the
// event refers to.
var ErrChecksumMismatch = errors.New("checksum mismatch")

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
