package artifacttest

import (
	"context"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"math/rand/v2"

	"github.com/controlfeed/controlfeed/controlevent"
)

// genReader yields size pseudo-random bytes derived from seed without
// holding them: it repeats a 64 KiB random block with its absolute offset
// stamped every 4 KiB, so no two 4 KiB blocks are equal. It hashes what it
// yields, so the test knows the expected reference without a copy.
type genReader struct {
	block []byte
	size  int64
	off   int64
	h     hash.Hash

	// after, if set, is called once when off first reaches afterAt.
	afterAt int64
	after   func()
	// failAt, if > 0, makes Read return failErr once off reaches it.
	failAt  int64
	failErr error
}

const genBlock = 64 << 10

func newGen(seed uint64, size int64) *genReader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	block := make([]byte, genBlock)
	rand.NewChaCha8(key).Read(block)
	return &genReader{block: block, size: size, h: controlevent.NewHash()}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.failAt > 0 && g.off >= g.failAt {
		return 0, g.failErr
	}
	if g.off >= g.size {
		return 0, io.EOF
	}
	if rem := g.size - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	if g.failAt > 0 {
		if rem := g.failAt - g.off; int64(len(p)) > rem {
			p = p[:rem]
		}
	}
	for n := 0; n < len(p); {
		n += copy(p[n:], g.block[(g.off+int64(n))%genBlock:])
	}
	// Stamp each 4 KiB block's offset over its first 8 bytes, clipped to
	// the part of the block inside p, so the content does not depend on
	// how the caller chunks its reads.
	end := g.off + int64(len(p))
	for b := g.off / 4096 * 4096; b < end; b += 4096 {
		var st [8]byte
		binary.LittleEndian.PutUint64(st[:], uint64(b))
		for x := max(b, g.off); x < min(b+8, end); x++ {
			p[x-g.off] = st[x-b]
		}
	}
	g.h.Write(p)
	before := g.off
	g.off += int64(len(p))
	if g.after != nil && before < g.afterAt && g.off >= g.afterAt {
		f := g.after
		g.after = nil
		f()
	}
	return len(p), nil
}

// ref returns the reference of the bytes yielded so far.
func (g *genReader) ref() string { return controlevent.ChecksumOf(g.h) }

// genBytes returns the whole content of a generator as a byte slice, for
// small sizes only.
func genBytes(seed uint64, size int64) []byte {
	b, err := io.ReadAll(newGen(seed, size))
	if err != nil {
		panic(err)
	}
	return b
}

// genRef returns the reference of the whole content of a generator,
// streaming.
func genRef(seed uint64, size int64) string {
	g := newGen(seed, size)
	if _, err := io.Copy(io.Discard, g); err != nil {
		panic(err)
	}
	return g.ref()
}

var errReaderBoom = errors.New("artifacttest: reader failed on purpose")

// cancelAfter returns a context canceled by the generator after it has
// yielded at bytes.
func cancelAfter(ctx context.Context, g *genReader, at int64) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	g.afterAt, g.after = at, cancel
	return ctx
}
