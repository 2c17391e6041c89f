package artifacttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/controlfeed/controlfeed/controlevent"
)

// The generator's content must not depend on how it is read, or stores that
// read in different chunk sizes would get different bytes than the suite
// expects.
func TestGen_ChunkingIndependent(t *testing.T) {
	const size = 3*genBlock + 12345
	want := genBytes(1, size)
	if len(want) != size {
		t.Fatalf("genBytes: %d bytes, want %d", len(want), size)
	}
	for name, r := range map[string]io.Reader{
		"OneByte": iotest.OneByteReader(newGen(1, size)),
		"Half":    iotest.HalfReader(newGen(1, size)),
	} {
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; differ from a plain read", name, len(got), err)
		}
	}
	if genRef(1, size) != controlevent.Checksum(want) {
		t.Error("genRef differs from the checksum of genBytes")
	}
	if bytes.Equal(want[:4096], want[4096:8192]) || bytes.Equal(want[:genBlock], want[genBlock:2*genBlock]) {
		t.Error("generator repeats itself")
	}
	if bytes.Equal(genBytes(2, 100), want[:100]) {
		t.Error("different seeds give the same content")
	}
}

func TestGen_Faults(t *testing.T) {
	g := newGen(1, 1<<20)
	g.failAt, g.failErr = 1000, errReaderBoom
	got, err := io.ReadAll(g)
	if len(got) != 1000 || !errors.Is(err, errReaderBoom) {
		t.Fatalf("failAt 1000: %d bytes, %v", len(got), err)
	}
	if g.ref() != controlevent.Checksum(got) {
		t.Fatal("ref() is not the checksum of what was read")
	}

	g = newGen(1, 1<<20)
	ctx := cancelAfter(context.Background(), g, 5000)
	buf := make([]byte, 4096)
	g.Read(buf)
	if ctx.Err() != nil {
		t.Fatal("canceled before reaching the threshold")
	}
	g.Read(buf)
	if ctx.Err() == nil {
		t.Fatal("not canceled after passing the threshold")
	}
}
