package natsobject

import (
	"bytes"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// TestLayout checks the stream, subject and chunk-count names this package
// derives from the Object Store's layout against what nats.go writes.
func TestLayout(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	s, err := New(ctx, artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: "layout", Create: true}, &Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := bytes.Repeat([]byte("layout "), 50_000) // 3 chunks
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.stream.CachedInfo().Config.Name; got != streamName("layout") {
		t.Fatalf("stream %q, want %q", got, streamName("layout"))
	}
	if _, err := s.stream.GetLastMsgForSubject(ctx, metaSubject("layout", ref)); err != nil {
		t.Fatalf("no metadata on %s: %v", metaSubject("layout", ref), err)
	}
	info, err := s.obs.GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.chunkCount(ctx, info.NUID)
	if err != nil || n != uint64(info.Chunks) || n != 3 {
		t.Fatalf("chunkCount = %d, %v; metadata says %d chunks, want 3", n, err, info.Chunks)
	}
}
