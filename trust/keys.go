package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// keyIDPrefix starts every key id; the suffix is hex of the public key's
// sha256, truncated.
const keyIDPrefix = "ed25519:"

// keyIDHexLen is how many hex digits of the public key's sha256 a key id
// keeps: 64 bits, enough to name the handful of keys a fleet trusts.
const keyIDHexLen = 16

// File headers of the text key formats. A parser refuses any other.
const (
	privateHeader = "controlfeed ed25519 private key v1"
	publicHeader  = "controlfeed ed25519 public key v1"
)

// KeyID returns the key id of an ed25519 public key: "ed25519:" and the
// first 16 hex digits of sha256(pub). It panics if pub is not
// ed25519.PublicKeySize bytes (a programming error: every parser in this
// package checks the size).
func KeyID(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		panic(fmt.Sprintf("trust: KeyID of a %d-byte public key", len(pub)))
	}
	sum := sha256.Sum256(pub)
	return keyIDPrefix + hex.EncodeToString(sum[:])[:keyIDHexLen]
}

// PublicKey is a trusted (or to be trusted) ed25519 public key with its id.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// PrivateKey is a signing key. Its String and GoString show the key id only,
// so a PrivateKey printed by mistake (a %v in a log line) leaks nothing.
type PrivateKey struct {
	id  string
	key ed25519.PrivateKey
}

// GenerateKey returns a new signing key read from rand (crypto/rand.Reader
// when rand is nil).
func GenerateKey(rand io.Reader) (*PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("trust: generate key: %w", err)
	}
	return &PrivateKey{id: KeyID(pub), key: priv}, nil
}

// NewPrivateKey returns the signing key with the given 32-byte seed (RFC 8032
// private key). It fails on a seed of another length.
func NewPrivateKey(seed []byte) (*PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("trust: private key seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &PrivateKey{id: KeyID(priv.Public().(ed25519.PublicKey)), key: priv}, nil
}

// ID returns the key id of k's public key.
func (k *PrivateKey) ID() string { return k.id }

// Public returns k's public key.
func (k *PrivateKey) Public() PublicKey {
	return PublicKey{ID: k.id, Key: k.key.Public().(ed25519.PublicKey)}
}

// String returns the key id and never the secret.
func (k *PrivateKey) String() string { return "trust.PrivateKey(" + k.id + ")" }

// GoString is String, so %#v does not print the secret either.
func (k *PrivateKey) GoString() string { return k.String() }

// sign signs msg with k.
func (k *PrivateKey) sign(msg []byte) []byte { return ed25519.Sign(k.key, msg) }

// MarshalPrivateKey returns the text form of k that `controlfeed keys
// generate` writes (to a file created 0600):
//
//	controlfeed ed25519 private key v1
//	kid: ed25519:0123456789abcdef
//	seed: <base64 of the 32-byte seed>
func MarshalPrivateKey(k *PrivateKey) []byte {
	return fmt.Appendf(nil, "%s\nkid: %s\nseed: %s\n", privateHeader, k.id,
		base64.StdEncoding.EncodeToString(k.key.Seed()))
}

// MarshalPublicKey returns the text form of a public key:
//
//	controlfeed ed25519 public key v1
//	kid: ed25519:0123456789abcdef
//	key: <base64 of the 32-byte public key>
func MarshalPublicKey(k PublicKey) []byte {
	return fmt.Appendf(nil, "%s\nkid: %s\nkey: %s\n", publicHeader, k.ID,
		base64.StdEncoding.EncodeToString(k.Key))
}

// ParsePrivateKey parses what MarshalPrivateKey writes. It checks that the
// kid line names the key the seed derives. Its errors never contain the
// seed.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	kid, val, err := parseKeyFile(b, privateHeader, "seed")
	if err != nil {
		return nil, fmt.Errorf("trust: parse private key: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(val)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("trust: parse private key %s: the seed line is not base64 of %d bytes", kid, ed25519.SeedSize)
	}
	k, _ := NewPrivateKey(seed)
	if k.id != kid {
		return nil, fmt.Errorf("trust: parse private key: the file says kid %s but its seed is key %s (edited or mixed-up file)", kid, k.id)
	}
	return k, nil
}

// ParsePublicKey parses what MarshalPublicKey writes, checking the kid line
// against the key.
func ParsePublicKey(b []byte) (PublicKey, error) {
	kid, val, err := parseKeyFile(b, publicHeader, "key")
	if err != nil {
		if bytes.HasPrefix(b, []byte(privateHeader)) {
			return PublicKey{}, fmt.Errorf("trust: parse public key: this is a private key file; trust the .pub file next to it")
		}
		return PublicKey{}, fmt.Errorf("trust: parse public key: %w", err)
	}
	return publicFrom(kid, val)
}

// ParseTrustSpec parses a trust entry written as ID=KEY (KEY is the base64
// of the 32-byte public key, as in the key line of a public key file). The
// ID must be the key id the key derives; a mismatch is an error, so a typo
// cannot trust a different key than the one named.
func ParseTrustSpec(s string) (PublicKey, error) {
	id, val, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(id, keyIDPrefix) {
		return PublicKey{}, fmt.Errorf("trust: trust entry %.80q is not ID=KEY (ID like %s0123456789abcdef, KEY the base64 public key)", s, keyIDPrefix)
	}
	return publicFrom(id, val)
}

func publicFrom(kid, val string) (PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(val)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("trust: public key %.40s is not base64 of %d bytes", kid, ed25519.PublicKeySize)
	}
	pub := ed25519.PublicKey(raw)
	if got := KeyID(pub); got != kid {
		return PublicKey{}, fmt.Errorf("trust: public key named %.40s is key %s (wrong id or wrong key)", kid, got)
	}
	return PublicKey{ID: kid, Key: pub}, nil
}

// parseKeyFile splits a key file into its kid and its value line. It never
// puts the value into an error.
func parseKeyFile(b []byte, header, valueName string) (kid, val string, err error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != 3 || strings.TrimRight(lines[0], "\r") != header {
		return "", "", fmt.Errorf("not a key file (want 3 lines starting with %q)", header)
	}
	kid, ok := strings.CutPrefix(strings.TrimRight(lines[1], "\r"), "kid: ")
	if !ok || !strings.HasPrefix(kid, keyIDPrefix) || len(kid) != len(keyIDPrefix)+keyIDHexLen {
		return "", "", fmt.Errorf("line 2 is not \"kid: %s<16 hex digits>\"", keyIDPrefix)
	}
	val, ok = strings.CutPrefix(strings.TrimRight(lines[2], "\r"), valueName+": ")
	if !ok {
		return "", "", fmt.Errorf("line 3 does not start with %q", valueName+": ")
	}
	return kid, val, nil
}
