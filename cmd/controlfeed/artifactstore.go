package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/outbox"
)

// artifactStore names the artifact store the settings select, as the
// outbox records a pump's store (backend and artifact.Locate's location).
func (s *settings) artifactStore(cmd *command) (outbox.ArtifactStore, error) {
	loc, err := artifact.Locate(s.ArtifactStore, s.artifactConfig())
	if err != nil {
		return outbox.ArtifactStore{}, fmt.Errorf("controlfeed %s: %w", cmd.name, err)
	}
	return outbox.ArtifactStore{Backend: s.ArtifactStore, Location: loc}, nil
}

// checkPumpStore refuses, before anything is stored, a write of cmd (what
// names it, as `kv put "k"`) into another artifact store than the one
// db's pump publishes references into (outbox.CheckArtifactStore): its
// event would halt every node at "artifact not found". A database with no
// record (no serve --feed-sink has run on it) passes.
func (s *settings) checkPumpStore(ctx context.Context, cmd *command, what string, db *sql.DB) error {
	st, err := s.artifactStore(cmd)
	if err != nil {
		return err
	}
	err = outbox.CheckArtifactStore(ctx, db, st)
	var me *outbox.ArtifactStoreMismatchError
	if !errors.As(err, &me) {
		return err
	}
	return fmt.Errorf("controlfeed %s: refused: this producer database's pump publishes artifacts from %s (recorded by serve --feed-sink on %s), "+
		"and this command would store into %s: the nodes fetch from the first, so every node would halt at its event (artifact not found); "+
		"nothing was stored or committed; pass %s (or the matching CONTROLFEED_ variables), "+
		"or, to move the producer to another store on purpose, see %q in the README: %w",
		what, describeStore(me.Recorded), recordedAt(me.RecordedAt), describeStore(me.Given), storeFlags(me.Recorded),
		"Changing the artifact store", outbox.ErrArtifactStoreMismatch)
}

// servePumpStoreError rewords serve's refusal of a database whose pump
// publishes from another artifact store (outbox.ErrArtifactStoreMismatch)
// in the command line's terms; other errors are returned as they are.
func servePumpStoreError(db string, err error) error {
	var me *outbox.ArtifactStoreMismatchError
	if !errors.As(err, &me) {
		return err
	}
	shell := "sqlite3 " + db
	if node.IsPostgresURL(db) {
		shell = "psql"
	}
	return fmt.Errorf("controlfeed serve: refused: %s records that its pump publishes artifacts from %s (since %s), and this serve was given %s: "+
		"the events already in its outbox and in the feed name artifacts that the nodes fetch from %s; "+
		"start serve with %s (or the matching CONTROLFEED_ variables), "+
		"or, to move this producer to the new store on purpose, copy those artifacts into it and, while no controlfeed process uses the database, "+
		"delete the record (%s: DELETE FROM %s), then start serve with the new store (see %q in the README): %w",
		node.RedactDB(db), describeStore(me.Recorded), recordedAt(me.RecordedAt), describeStore(me.Given), describeStore(me.Recorded),
		storeFlags(me.Recorded), shell, outbox.ArtifactStoreTable, "Changing the artifact store", outbox.ErrArtifactStoreMismatch)
}

// recordedAt formats when a record was made, or "an unknown time".
func recordedAt(t time.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}
