package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

// Kind is the value of Manifest.Kind for every controlfeed snapshot.
const Kind = "controlfeed.snapshot"

// FormatVersion is the manifest and database format this program writes and
// the newest it restores. Version 1: the database is a single SQLite file in
// rollback-journal mode (as VACUUM INTO writes it), stored as one artifact.
const FormatVersion = 1

// MaxManifestSize is the largest manifest Load reads; a manifest is a few
// hundred bytes.
const MaxManifestSize = 1 << 20

// Manifest describes one snapshot. It is stored as a JSON artifact (the
// fields below, snake_case) next to the database artifact it names.
type Manifest struct {
	// Kind is always Kind ("controlfeed.snapshot").
	Kind string `json:"kind"`
	// Format is the snapshot format version (FormatVersion when written
	// by this program).
	Format int `json:"format"`
	// Database names the database file artifact.
	Database Database `json:"database"`
	// Schemas holds the schema version of each controlfeed component
	// present in the database (ComponentApplier always; ComponentKV and
	// ComponentOutbox when their tables exist).
	Schemas map[string]int `json:"schemas"`
	// ControlVersion is the node's cursor in the copy: the snapshot holds
	// the effect of every event up to and including it, and of none after.
	// A node restored from it resumes polling after it.
	ControlVersion uint64 `json:"control_version"`
	// AppliedEvents is the number of rows of controlfeed_applied_events in
	// the copy.
	AppliedEvents int64 `json:"applied_events"`
	// Node names the node the snapshot was taken from (CreateOptions.Node);
	// informational.
	Node string `json:"node,omitempty"`
	// CreatedAt is when the copy was taken (UTC).
	CreatedAt time.Time `json:"created_at"`
	// Chain is the trust chain head (package trust) stored with the
	// cursor in the copy: the seq and chain digest of the last signed event
	// the node applied or skipped up to ControlVersion. It is nil (and the
	// member absent, so that programs predating it still read the
	// manifest) when that head is zero: the node verified no signed event.
	// Restore compares it with the restored database's cursor row.
	Chain *ChainHead `json:"chain,omitempty"`

	// SignedBy is the key id the manifest's envelope names when it was
	// stored signed (see CreateOptions.SigningKey), "" when unsigned. It is
	// a claim, not a verification: Verify checks it. Not encoded.
	SignedBy string `json:"-"`
	// envelope is the signed form Decode read, nil for an unsigned
	// manifest; Verify checks it.
	envelope *trust.Envelope

	// Ref is the manifest's own artifact reference. It is not part of the
	// encoded manifest (a content address cannot contain itself): Create
	// and Load set it, and Restore uses it only in messages.
	Ref string `json:"-"`
}

// Database references the database file of a snapshot. The file is stored
// whole as one artifact, so its reference is its content address: Ref and
// SHA256 are the same "sha256:<hex>" string, both recorded so that a reader
// of the manifest needs no knowledge of the store's addressing.
type Database struct {
	// Ref is the artifact reference to Get the file with.
	Ref string `json:"ref"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the file's checksum, "sha256:<64 lowercase hex>".
	SHA256 string `json:"sha256"`
}

// Encode returns the manifest's JSON encoding, as stored: indented, fields
// in declaration order, schema keys sorted, a final newline.
func (m Manifest) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ChainHead is a trust chain head as a manifest records it (trust.Head).
type ChainHead struct {
	// Seq is the chain sequence number of the last signed event.
	Seq uint64 `json:"seq"`
	// Digest is its chain digest, "sha256:<hex>".
	Digest string `json:"digest"`
}

// chainHead returns m's chain head as a trust.Head, the zero Head when
// m records none.
func (m Manifest) chainHead() trust.Head {
	if m.Chain == nil {
		return trust.Head{}
	}
	return trust.Head{Seq: m.Chain.Seq, Digest: m.Chain.Digest}
}

// Decode parses a manifest stored by Create, unsigned (the manifest's
// JSON) or signed (a DSSE envelope whose payload is that JSON, see
// CreateOptions.SigningKey), and checks that this program can restore it
// (see Check). It does not verify a signature: Verify does, and Restore
// calls it when given trusted keys. ref, the manifest's artifact
// reference, is set as the result's Ref and named in errors.
func Decode(b []byte, ref string) (Manifest, error) {
	var probe struct {
		PayloadType *string `json:"payloadType"`
	}
	if json.Unmarshal(b, &probe) == nil && probe.PayloadType != nil {
		return decodeSigned(b, ref)
	}
	return decodePlain(b, ref)
}

// decodeSigned decodes a manifest stored as a DSSE envelope.
func decodeSigned(b []byte, ref string) (Manifest, error) {
	env, err := trust.ParseEnvelope(b)
	if err != nil {
		return Manifest{}, fmt.Errorf("snapshot: manifest %s: signed envelope: %v: %w", ref, err, ErrCorrupt)
	}
	if env.PayloadType != trust.ManifestPayloadType {
		return Manifest{}, &IncompatibleError{Manifest: ref, What: "signed payload type", Got: strconv.Quote(env.PayloadType),
			Supported: strconv.Quote(trust.ManifestPayloadType), Hint: "it is not a snapshot manifest, or one of a newer controlfeed; upgrade this one to restore it"}
	}
	m, err := decodePlain(env.Payload, ref)
	if err != nil {
		return Manifest{}, err
	}
	m.envelope = &env
	if len(env.Signatures) > 0 {
		m.SignedBy = env.Signatures[0].KeyID
	}
	return m, nil
}

// decodePlain decodes the manifest's JSON.
func decodePlain(b []byte, ref string) (Manifest, error) {
	var head struct {
		Kind   string `json:"kind"`
		Format int    `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil || head.Kind != Kind {
		got := strconv.Quote(head.Kind)
		if err != nil {
			got = "not a JSON manifest (" + err.Error() + ")"
		}
		return Manifest{}, &IncompatibleError{Manifest: ref, What: "kind", Got: got, Supported: strconv.Quote(Kind),
			Hint: "the reference does not name a snapshot manifest; pass the manifest's reference, not the database's"}
	}
	if head.Format != FormatVersion {
		return Manifest{}, formatError(ref, head.Format)
	}
	var m Manifest
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: manifest %s: decode format %d: %v: %w", ref, head.Format, err, ErrCorrupt)
	}
	m.Ref = ref
	if err := m.Check(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func formatError(ref string, got int) error {
	hint := "upgrade controlfeed to restore it"
	if got < FormatVersion {
		hint = "it was written by a program this one cannot read; take a new snapshot"
	}
	return &IncompatibleError{Manifest: ref, What: "format", Got: strconv.Itoa(got), Supported: strconv.Itoa(FormatVersion), Hint: hint}
}

// Check reports whether this program can restore the snapshot m describes:
// Kind and Format are this program's, the database reference is well
// formed, and every schema version is known and at most SupportedSchemas.
// Incompatibility is an *IncompatibleError (errors.Is ErrIncompatible); a
// manifest that contradicts itself wraps ErrCorrupt.
func (m Manifest) Check() error {
	if m.Kind != Kind {
		return &IncompatibleError{Manifest: m.Ref, What: "kind", Got: strconv.Quote(m.Kind), Supported: strconv.Quote(Kind), Hint: "not a snapshot manifest"}
	}
	if m.Format != FormatVersion {
		return formatError(m.Ref, m.Format)
	}
	if err := artifact.ParseRef(m.Database.Ref); err != nil {
		return fmt.Errorf("snapshot: manifest %s: database ref: %v: %w", m.Ref, err, ErrCorrupt)
	}
	if err := controlevent.ParseChecksum(m.Database.SHA256); err != nil || m.Database.SHA256 != m.Database.Ref {
		return fmt.Errorf("snapshot: manifest %s: database sha256 %q does not equal its ref %s: %w", m.Ref, m.Database.SHA256, m.Database.Ref, ErrCorrupt)
	}
	if m.Chain != nil && (m.Chain.Seq == 0 || controlevent.ParseChecksum(m.Chain.Digest) != nil) {
		return fmt.Errorf("snapshot: manifest %s: chain head seq %d digest %.80q: want seq > 0 and a sha256:<hex> digest: %w", m.Ref, m.Chain.Seq, m.Chain.Digest, ErrCorrupt)
	}
	if m.Database.Size <= 0 || m.AppliedEvents < 0 {
		return fmt.Errorf("snapshot: manifest %s: database size %d, applied events %d: %w", m.Ref, m.Database.Size, m.AppliedEvents, ErrCorrupt)
	}
	sup, err := supported()
	if err != nil {
		return err
	}
	if _, ok := m.Schemas[ComponentApplier]; !ok {
		return fmt.Errorf("snapshot: manifest %s: no %s schema version (not a node snapshot): %w", m.Ref, ComponentApplier, ErrCorrupt)
	}
	for _, name := range slices.Sorted(maps.Keys(m.Schemas)) {
		v := m.Schemas[name]
		max, known := sup[name]
		switch {
		case !known:
			return &IncompatibleError{Manifest: m.Ref, What: "schema " + strconv.Quote(name), Got: "an unknown component",
				Supported: "components " + fmt.Sprint(slices.Sorted(maps.Keys(sup))), Hint: "upgrade controlfeed to restore it"}
		case v > max:
			return &IncompatibleError{Manifest: m.Ref, What: "schema " + strconv.Quote(name) + " version", Got: strconv.Itoa(v),
				Supported: "up to " + strconv.Itoa(max), Hint: "the snapshot was taken by a newer controlfeed; upgrade this one to restore it"}
		case v < 1:
			return fmt.Errorf("snapshot: manifest %s: schema %q version %d: %w", m.Ref, name, v, ErrCorrupt)
		}
	}
	return nil
}

// Load fetches the manifest stored under ref and decodes it (see Decode).
// Errors wrap the store's (artifact.ErrNotFound, artifact.ErrCorrupt,
// artifact.ErrBadRef) or Decode's.
func Load(ctx context.Context, store artifact.Store, ref string) (Manifest, error) {
	b, err := artifact.GetBytes(ctx, store, ref, MaxManifestSize)
	if err != nil {
		return Manifest{}, fmt.Errorf("snapshot: load manifest %s from %s: %w", ref, store.Name(), err)
	}
	return Decode(b, ref)
}
