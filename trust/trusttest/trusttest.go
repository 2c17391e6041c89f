// Package trusttest has the test helpers of package trust's users: keys
// that are the same in every run, and keyrings that trust them.
package trusttest

import (
	"bytes"
	"testing"

	"github.com/controlfeed/controlfeed/trust"
)

// Key returns the signing key whose ed25519 seed is 32 bytes of seed: the
// same key, and key id, in every run. It fails t if the key cannot be made.
func Key(t testing.TB, seed byte) *trust.PrivateKey {
	t.Helper()
	k, err := trust.NewPrivateKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Keyring returns a keyring that trusts the public halves of keys. It
// fails t if trust.NewKeyring refuses them.
func Keyring(t testing.TB, keys ...*trust.PrivateKey) *trust.Keyring {
	t.Helper()
	pubs := make([]trust.PublicKey, 0, len(keys))
	for _, k := range keys {
		pubs = append(pubs, k.Public())
	}
	kr, err := trust.NewKeyring(pubs...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}
