package controlevent_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

func TestChecksum(t *testing.T) {
	// sha256("test"), a known vector.
	if got := controlevent.Checksum([]byte("test")); got != goodSum {
		t.Fatalf("Checksum(test) = %s, want %s", got, goodSum)
	}
	h := controlevent.NewHash()
	h.Write([]byte("te"))
	h.Write([]byte("st"))
	if got := controlevent.ChecksumOf(h); got != goodSum {
		t.Fatalf("ChecksumOf(streamed) = %s, want %s", got, goodSum)
	}
	if err := controlevent.ParseChecksum(controlevent.Checksum(nil)); err != nil {
		t.Fatalf("ParseChecksum(Checksum(nil)): %v", err)
	}
}

func TestParseChecksum(t *testing.T) {
	bad := map[string]string{
		"Empty":      "",
		"NoPrefix":   goodSum[7:],
		"OtherAlgo":  "sha512:" + goodSum[7:],
		"Short":      goodSum[:70],
		"Long":       goodSum + "0",
		"Uppercase":  "sha256:" + strings.ToUpper(goodSum[7:]),
		"NonHex":     goodSum[:70] + "g",
		"Whitespace": goodSum + " ",
		"Huge":       "sha256:" + strings.Repeat("0", 100_000),
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			err := controlevent.ParseChecksum(s)
			if !errors.Is(err, controlevent.ErrInvalid) {
				t.Fatalf("ParseChecksum(%.40q) = %v, want ErrInvalid", s, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message is %d bytes; the input must be truncated", len(err.Error()))
			}
		})
	}
	if err := controlevent.ParseChecksum(goodSum); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyChecksum(t *testing.T) {
	if err := controlevent.VerifyChecksum([]byte("test"), goodSum); err != nil {
		t.Fatalf("VerifyChecksum of matching bytes: %v", err)
	}
	err := controlevent.VerifyChecksum([]byte("tesT"), goodSum)
	if !errors.Is(err, controlevent.ErrChecksumMismatch) || errors.Is(err, controlevent.ErrInvalid) {
		t.Fatalf("VerifyChecksum of other bytes = %v, want ErrChecksumMismatch only", err)
	}
	err = controlevent.VerifyChecksum([]byte("test"), "sha256:nope")
	if !errors.Is(err, controlevent.ErrInvalid) || errors.Is(err, controlevent.ErrChecksumMismatch) {
		t.Fatalf("VerifyChecksum with a malformed checksum = %v, want ErrInvalid only", err)
	}
}
