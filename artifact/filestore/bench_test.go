package filestore_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/controlfeed/controlfeed/artifact/filestore"
)

// BenchmarkFileStore_Put measures Put of new content (each iteration's bytes
// differ, so every Put writes, fsyncs and renames) and of content already
// present (the no-churn path: write temp, hash, remove temp).
func BenchmarkFileStore_Put(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20} {
		for _, present := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/new", size>>10)
			if present {
				name = fmt.Sprintf("%dKiB/present", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				s, err := filestore.New(b.TempDir(), nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx := b.Context()
				buf := make([]byte, size)
				for i := range buf {
					buf[i] = byte(i * 7)
				}
				if present {
					if _, err := s.Put(ctx, bytes.NewReader(buf)); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var i uint64
				for b.Loop() {
					if !present {
						i++
						binary.LittleEndian.PutUint64(buf, i)
					}
					if _, err := s.Put(ctx, bytes.NewReader(buf)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
