package sqlitedb

import (
	"context"
	"path/filepath"
	"testing"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dir with space", "n.db")
	if _, err := Open(ctx, path); err == nil {
		t.Fatalf("Open in a missing directory succeeded")
	}
	path = filepath.Join(t.TempDir(), "a b.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	var busy int
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if busy != int(BusyTimeout.Milliseconds()) {
		t.Errorf("busy_timeout = %d, want %d", busy, BusyTimeout.Milliseconds())
	}
	var auto int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil {
		t.Fatal(err)
	}
	if auto != AutoCheckpointPages {
		t.Errorf("wal_autocheckpoint = %d, want %d", auto, AutoCheckpointPages)
	}
	if _, err := Open(ctx, ""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
}
