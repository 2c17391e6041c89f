package filesource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// markerName is the prune marker's file name. It does not end in ".json",
// so readers never take it for an event.
const markerName = ".pruned"

// markerFormat is the only marker format version this package reads and
// writes.
const markerFormat = 1

// maxMarkerSize bounds what is read of a marker file.
const maxMarkerSize = 4 << 10

// marker is the content of the prune marker: the retention of the feed and
// the highest position ever assigned in it. The zero value means "never
// pruned".
type marker struct {
	// Format is markerFormat.
	Format int `json:"format"`
	// PrunedThrough is the highest position pruned: event files at or
	// below it may be gone, so a cursor below it is behind retention.
	PrunedThrough uint64 `json:"pruned_through"`
	// HighWater is the highest position assigned in the directory when it
	// was pruned, pruned files included. Writers assign above it.
	HighWater uint64 `json:"high_water"`
	// PrunedAt is when the marker was written (RFC 3339), for operators.
	PrunedAt string `json:"pruned_at,omitempty"`
}

// readMarker reads the prune marker of dir. A missing marker is the zero
// marker and no error.
func readMarker(dir string) (marker, error) {
	f, err := os.Open(filepath.Join(dir, markerName))
	if errors.Is(err, fs.ErrNotExist) {
		return marker{}, nil
	}
	if err != nil {
		return marker{}, fmt.Errorf("prune marker %s: %w", markerName, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMarkerSize+1))
	if err != nil {
		return marker{}, fmt.Errorf("prune marker %s: %w", markerName, err)
	}
	m, err := parseMarker(b)
	if err != nil {
		return marker{}, fmt.Errorf("prune marker %s: %w; restore it (a writer needs its high_water) or, if no prune ever ran, remove it", markerName, err)
	}
	return m, nil
}

// parseMarker decodes and checks a marker file's content. Unknown fields are
// ignored, so later versions may add some without changing Format.
func parseMarker(b []byte) (marker, error) {
	if len(b) > maxMarkerSize {
		return marker{}, fmt.Errorf("%d bytes exceeds the %d-byte limit", len(b), maxMarkerSize)
	}
	var m marker
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return marker{}, fmt.Errorf("not a JSON marker object: %v", err)
	}
	if dec.More() {
		return marker{}, errors.New("trailing data after the marker object")
	}
	switch {
	case m.Format != markerFormat:
		return marker{}, fmt.Errorf("format is %d; this program reads format %d", m.Format, markerFormat)
	case m.PrunedThrough == 0:
		return marker{}, errors.New("pruned_through is 0 or missing")
	case m.HighWater < m.PrunedThrough:
		return marker{}, fmt.Errorf("high_water %d is below pruned_through %d", m.HighWater, m.PrunedThrough)
	case m.HighWater > maxPosition:
		return marker{}, fmt.Errorf("high_water %d does not fit in a signed 64-bit integer", m.HighWater)
	}
	return m, nil
}

// writeMarker replaces dir's marker with m atomically and durably: a
// temporary file, fsync, rename over the marker, fsync of the directory.
// The caller holds the exclusive lock.
func writeMarker(dir string, m marker) error {
	m.Format = markerFormat
	if m.PrunedAt == "" {
		m.PrunedAt = time.Now().UTC().Format(time.RFC3339)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(dir, tempPrefix+"prune-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, filepath.Join(dir, markerName)); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
