package natsobject_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// BenchmarkStore measures, on an embedded server, Put of new content (an
// upload), Put of content already stored (the check that it is complete)
// and GetBytes, which includes the check before the transfer.
func BenchmarkStore(b *testing.B) {
	srv := natsembed.StartForTest(b)
	ctx := b.Context()
	for _, size := range []int{1 << 10, 1 << 20} {
		h := newHarness(ctx, b, srv)
		s, err := natsobject.New(ctx, h.cfg, &natsobject.Options{SpoolDir: h.spool})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		buf := make([]byte, size)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		ref, err := artifact.PutBytes(ctx, s, buf)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("Put/%dKiB/new", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			c := bytes.Clone(buf)
			var i uint64
			for b.Loop() {
				i++
				binary.LittleEndian.PutUint64(c, i)
				if _, err := artifact.PutBytes(ctx, s, c); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Put/%dKiB/present", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := artifact.PutBytes(ctx, s, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("GetBytes/%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := artifact.GetBytes(ctx, s, ref, int64(size)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
