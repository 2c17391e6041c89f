package filestore_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
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

// BenchmarkFileStore_GetBytes measures reading a 200-byte object whole,
// through Store.GetBytes (artifact.BytesGetter, what artifact.GetBytes uses)
// and, as the baseline, through Get + io.ReadAll of the verifying reader.
func BenchmarkFileStore_GetBytes(b *testing.B) {
	s, err := filestore.New(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := artifact.PutBytes(b.Context(), s, bytes.Repeat([]byte("v"), 200))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("GetBytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.GetBytes(b.Context(), ref, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get+ReadAll", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rc, err := s.Get(b.Context(), ref)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadAll(rc); err != nil {
				b.Fatal(err)
			}
			rc.Close()
		}
	})
}
