package applier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

// signer signs events for the FakeSource the way the pump does: in order,
// each chained to the one before.
type signer struct {
	t    *testing.T
	key  *trust.PrivateKey
	head trust.Head
}

func newSigner(t *testing.T, seed byte) *signer {
	k, err := trust.NewPrivateKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &signer{t: t, key: k}
}

// sign signs the unpublished form of e after the signer's head and returns
// it stamped with e's ControlVersion.
func (s *signer) sign(e controlevent.Event) controlevent.Event {
	cv := e.ControlVersion
	e.ControlVersion = 0
	out, next, err := trust.Sign(s.key, e, s.head)
	if err != nil {
		s.t.Fatal(err)
	}
	s.head = next
	out.ControlVersion = cv
	return out
}

func (s *signer) keyring(t *testing.T) *trust.Keyring {
	kr, err := trust.NewKeyring(s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func withKeyring(kr *trust.Keyring) func(*applier.Config) {
	return func(c *applier.Config) { c.Keyring = kr }
}

func TestTrust_SignedChainApplies(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	s := newSigner(t, 1)
	src := &FakeSource{}
	for _, e := range evs(1, 50, typ) {
		src.Add(s.sign(e))
	}
	h := newInsertHandler()
	if err := drain(t, newApplier(t, db, src, nil, h, withKeyring(s.keyring(t)))); err != nil {
		t.Fatal(err)
	}
	if got := cursorOf(t, db); got != 50 {
		t.Fatalf("cursor %d, want 50", got)
	}
	head, err := applier.ReadTrustHead(ctx, db)
	if err != nil || head != s.head {
		t.Fatalf("stored chain head %+v (%v), want %+v", head, err, s.head)
	}
	// A restarted node continues from the stored head.
	for _, e := range evs(51, 60, typ) {
		src.Add(s.sign(e))
	}
	if err := drain(t, newApplier(t, openSecond(t, path), src, nil, h, withKeyring(s.keyring(t)))); err != nil {
		t.Fatal(err)
	}
	if got := cursorOf(t, db); got != 60 {
		t.Fatalf("cursor after restart %d, want 60", got)
	}
}

// TestTrust_Refused runs every forged case: nothing is applied, the node is
// security-halted with the case's own reason, a plain Skip is refused, and
// the explicit override lets the fleet resume.
func TestTrust_Refused(t *testing.T) {
	other := newSigner(t, 2)
	cases := map[string]struct {
		// build returns the feed after the good events 1..3 and the
		// event expected to halt.
		build  func(s *signer, good []controlevent.Event) (feed []controlevent.Event, halt string)
		reason string
		// moves: after the override, whether the chain head moved to the
		// skipped event (its signature is valid and it lies past a gap).
		moves bool
		// resumes: after the override, the producer's next signed event
		// applies with no other action (the runbook's promise).
		resumes bool
	}{
		"Unsigned": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			return append(good, ev(4, typ)), "evt-4"
		}, "unsigned", false, true},
		"UnknownKey": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			other.head = s.head
			return append(good, other.sign(ev(4, typ))), "evt-4"
		}, "unknown-key", false, true},
		"AlteredField": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			e := s.sign(ev(4, typ))
			e.Key = "tenants/evil"
			s.head = trust.Head{} // the producer never signed this
			return append(good, e), "evt-4"
		}, "bad-signature", false, false},
		"Dropped": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			s.sign(ev(4, typ)) // signed, never delivered
			e := s.sign(ev(5, typ))
			e.ControlVersion = 4
			return append(good, e), "evt-5"
		}, "chain-gap", true, true},
		"Swapped": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			e4 := s.sign(ev(4, typ))
			e5 := s.sign(ev(5, typ))
			e4.ControlVersion, e5.ControlVersion = 5, 4
			return append(good, e5, e4), "evt-5"
		}, "chain-gap", true, false},
		"ReplayUnrecorded": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			// An old signed event under a new EventID is a bad
			// signature; under its own id at a new position a replay.
			// Here: the first event of another chain by the same key.
			fresh := &signer{t: s.t, key: s.key}
			e := fresh.sign(ev(4, typ))
			return append(good, e), "evt-4"
		}, "chain-replay", false, true},
		"Injected": {func(s *signer, good []controlevent.Event) ([]controlevent.Event, string) {
			forged := &signer{t: s.t, key: s.key, head: trust.Head{Seq: s.head.Seq, Digest: "sha256:" + fmt.Sprintf("%064d", 0)}}
			return append(good, forged.sign(ev(4, typ))), "evt-4"
		}, "chain-fork", false, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, path := openDB(t)
			op := openSecond(t, path)
			s := newSigner(t, 1)
			var good []controlevent.Event
			for _, e := range evs(1, 3, typ) {
				good = append(good, s.sign(e))
			}
			evts, haltID := c.build(s, good)
			src := &FakeSource{Events: evts}
			h := newInsertHandler()
			a := newApplier(t, db, src, nil, h, withKeyring(newSigner(t, 1).keyring(t)))
			err := drain(t, a)
			if !errors.Is(err, applier.ErrSecurityHalted) || !errors.Is(err, trust.ErrSecurity) {
				t.Fatalf("drain = %v, want a security halt", err)
			}
			st := a.Status()
			if st.State != applier.StateSecurityHalted || st.Halted == nil || st.Halted.EventID != haltID || st.Halted.Security != c.reason {
				t.Fatalf("status %v %+v, want security_halted at %s (%s)", st.State, st.Halted, haltID, c.reason)
			}
			// The swap is told from a drop when the missing event came in
			// the same poll.
			if reordered := strings.Contains(st.Halted.Error, "seq 4 follows at control version 5: reordered"); reordered != (name == "Swapped") {
				t.Fatalf("halt error %q: says reordered %v, want %v", st.Halted.Error, reordered, name == "Swapped")
			}
			if h.count(haltID) != 0 || cursorOf(t, db) != 3 {
				t.Fatalf("handler ran %d times for %s; cursor %d", h.count(haltID), haltID, cursorOf(t, db))
			}
			stored, err := applier.ReadStatus(ctx, op)
			if err != nil || stored.Halted == nil || stored.Halted.Security != c.reason {
				t.Fatalf("stored halt %+v, %v", stored.Halted, err)
			}
			// Still halted on retry, a plain skip refused.
			if _, err := a.Step(ctx); !errors.Is(err, applier.ErrSecurityHalted) {
				t.Fatalf("retry: %v", err)
			}
			if err := applier.Skip(ctx, op, haltID); !errors.Is(err, applier.ErrSecurityHalted) {
				t.Fatalf("plain Skip of a security halt = %v", err)
			}
			headBefore, _ := applier.ReadTrustHead(ctx, op)
			if err := applier.SkipSecurityHalt(ctx, op, haltID); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Step(ctx); err != nil && !errors.Is(err, applier.ErrSecurityHalted) {
				t.Fatalf("after override: %v", err)
			}
			if h.count(haltID) != 0 {
				t.Fatalf("the overridden event was applied")
			}
			headAfter, _ := applier.ReadTrustHead(ctx, op)
			if moved := headAfter != headBefore; moved != c.moves {
				t.Fatalf("chain head %+v -> %+v, moved=%v want %v", headBefore, headAfter, moved, c.moves)
			}
			if !c.resumes {
				return // AlteredField: the producer's next event follows the unaltered copy; Swapped: the other copy follows
			}
			next := s.sign(ev(9, typ))
			next.ControlVersion = uint64(len(evts) + 1)
			src.Add(next)
			if err := drain(t, a); err != nil {
				t.Fatalf("the producer's next event after the override: %v", err)
			}
			if h.count("evt-9") != 1 || cursorOf(t, db) != next.ControlVersion {
				t.Fatalf("the producer's next event applied %d times, cursor %d", h.count("evt-9"), cursorOf(t, db))
			}
		})
	}
}

// TestTrust_RepublishAfterDedupWindow: the pump republished an event the node
// had applied, and the broker no longer deduplicated it, so it arrives again
// at a new position. Its chain link is a replay, but it changes nothing: it
// passes as a duplicate and the chain continues.
func TestTrust_RepublishAfterDedupWindow(t *testing.T) {
	db, _ := openDB(t)
	s := newSigner(t, 1)
	src := &FakeSource{}
	for _, e := range evs(1, 3, typ) {
		src.Add(s.sign(e))
	}
	again := src.Events[2]
	again.ControlVersion = 4
	src.Add(again)
	next := s.sign(ev(5, typ))
	src.Add(next)
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, withKeyring(s.keyring(t)))
	if err := drain(t, a); err != nil {
		t.Fatal(err)
	}
	if cursorOf(t, db) != 5 || h.count("evt-3") != 1 || h.count("evt-5") != 1 {
		t.Fatalf("cursor %d, evt-3 applied %d times, evt-5 %d", cursorOf(t, db), h.count("evt-3"), h.count("evt-5"))
	}
	if st := a.Status(); st.Duplicates != 1 || st.State != applier.StateApplying {
		t.Fatalf("status %+v", st)
	}
}

// TestTrust_NoKeyringIgnoresSignatures: a node without trusted keys applies
// signed and unsigned events alike (the documented downgrade).
func TestTrust_NoKeyringIgnoresSignatures(t *testing.T) {
	db, _ := openDB(t)
	s := newSigner(t, 1)
	src := &FakeSource{Events: []controlevent.Event{s.sign(ev(1, typ)), ev(2, typ), s.sign(ev(3, typ))}}
	var logs bytes.Buffer
	withLog := func(c *applier.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }
	a := newApplier(t, db, src, nil, newInsertHandler(), withLog)
	if err := drain(t, a); err != nil || cursorOf(t, db) != 3 {
		t.Fatalf("drain = %v, cursor %d", err, cursorOf(t, db))
	}
	// It says so, once: a node an operator forgot to give --trust-key.
	if n := strings.Count(logs.String(), "the feed's events are signed, but this node trusts no key"); n != 1 {
		t.Fatalf("the unverified-signed-feed warning was logged %d times, want 1:\n%s", n, logs.String())
	}
}

// TestTrust_KeyEvents rotates the producer's key through the feed: an
// add-key event signed with the old key, then events by the new key in the
// same batch, then a revoke of the old key; an event by the old key after
// that halts, and a node without trusted keys learns nothing.
func TestTrust_KeyEvents(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey := newSigner(t, 1), newSigner(t, 2)
	now := time.Unix(1700000000, 0)
	var feedEvents []controlevent.Event
	cv := uint64(0)
	add := func(s *signer, e controlevent.Event) {
		cv++
		e.ControlVersion = cv
		feedEvents = append(feedEvents, s.sign(e))
		oldKey.head, newKey.head = s.head, s.head
	}
	add(oldKey, ev(1, typ))
	addEv, err := trust.AddKeyEvent(newKey.key.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	add(oldKey, addEv)
	add(newKey, ev(3, typ))
	add(newKey, ev(4, typ))
	revoke, _ := trust.RevokeKeyEvent(oldKey.key.ID(), now)
	add(newKey, revoke)
	add(newKey, ev(6, typ))

	db, _ := openDB(t)
	h := newInsertHandler()
	a := newApplier(t, db, &FakeSource{Events: feedEvents}, nil, h, withKeyring(oldKey.keyring(t)))
	if err := drain(t, a); err != nil {
		t.Fatalf("rotation through the feed: %v", err)
	}
	if got := cursorOf(t, db); got != 6 {
		t.Fatalf("cursor %d, want 6", got)
	}
	keys, err := applier.ReadTrustedKeys(ctx, db)
	if err != nil || len(keys) != 2 {
		t.Fatalf("trusted keys %+v, %v", keys, err)
	}
	// The retired key can no longer sign.
	src := &FakeSource{Events: feedEvents}
	oldKey.head = newKey.head
	src.Add(oldKey.sign(ev(7, typ)))
	a = newApplier(t, db, src, nil, h, withKeyring(oldKey.keyring(t)))
	if err := drain(t, a); !errors.Is(err, applier.ErrSecurityHalted) || a.Status().Halted.Security != "unknown-key" {
		t.Fatalf("event by the revoked key: %v", err)
	}

	// A node that does not verify records the key events and learns nothing.
	plain, _ := openDB(t)
	if err := drain(t, newApplier(t, plain, &FakeSource{Events: feedEvents}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	if keys, _ := applier.ReadTrustedKeys(ctx, plain); len(keys) != 0 || cursorOf(t, plain) != 6 {
		t.Fatalf("a node without trusted keys learned %+v", keys)
	}

	// An add-key event by an untrusted key is refused like any event.
	forged := newSigner(t, 3)
	fe, _ := trust.AddKeyEvent(forged.key.Public(), now)
	fe.ControlVersion = 1
	victim, _ := openDB(t)
	a = newApplier(t, victim, &FakeSource{Events: []controlevent.Event{forged.sign(fe)}}, nil, newInsertHandler(), withKeyring(oldKey.keyring(t)))
	if err := drain(t, a); !errors.Is(err, applier.ErrSecurityHalted) {
		t.Fatalf("forged add-key event: %v", err)
	}
	if keys, _ := applier.ReadTrustedKeys(ctx, victim); len(keys) != 0 {
		t.Fatalf("a forged add-key event was applied: %+v", keys)
	}
}

// TestTrust_PollAheadChecks: on a backlog the signature checks of the next
// batch are made while the batch before commits (pollAhead). They must
// still stop a forged event at its exact position, and checks made with
// the keys of before a key event must not be used after it: a rotation in
// the backlog applies without a halt, and the revoked key is refused at
// once.
func TestTrust_PollAheadChecks(t *testing.T) {
	mod := func(kr *trust.Keyring) func(*applier.Config) {
		return func(c *applier.Config) { c.Keyring, c.MaxBatch = kr, 8 }
	}
	// A Poll of 8 events is one batch; a Poll of 24 is three, and the
	// checks made for the whole Poll carry over to its second and third.
	for _, limit := range []int{8, 24} {
		t.Run(fmt.Sprintf("poll %d", limit), func(t *testing.T) { testPollAheadChecks(t, limit, mod) })
	}
}

func testPollAheadChecks(t *testing.T, limit int, mod func(*trust.Keyring) func(*applier.Config)) {

	t.Run("forged event in a polled-ahead batch", func(t *testing.T) {
		// In the second Poll: its first batch with 8 events a Poll, its
		// second batch (checks carried from the first) with 24.
		forged := uint64(27)
		if limit > 8 {
			forged = 35
		}
		s := newSigner(t, 1)
		src := newSerialSource(limit)
		for _, e := range evs(1, 48, typ) {
			e = s.sign(e)
			if e.ControlVersion == forged {
				e.Key = "tenants/evil" // altered after signing
			}
			src.Add(e)
		}
		db, _ := openDB(t)
		h := newInsertHandler()
		a := newApplier(t, db, src, nil, h, mod(s.keyring(t)))
		if err := drain(t, a); !errors.Is(err, applier.ErrSecurityHalted) {
			t.Fatalf("drain = %v, want a security halt", err)
		}
		id := fmt.Sprintf("evt-%d", forged)
		if got := a.Status().Halted; got == nil || got.Security != "bad-signature" || got.EventID != id {
			t.Fatalf("halted %+v, want bad-signature at %s", got, id)
		}
		if c := cursorOf(t, db); c != forged-1 {
			t.Errorf("cursor %d, want %d (everything before the forged event)", c, forged-1)
		}
		if h.count(id) != 0 {
			t.Error("the forged event was applied")
		}
		want := []uint64{0, 8, 16}
		if limit > 8 {
			want = []uint64{0, 24}
		}
		if got := src.polledAfter(); len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Errorf("polled after %v, want %v...: the backlog was not polled ahead, so the test does not reach the checks made ahead", got, want)
		}
	})

	t.Run("rotation in a polled-ahead backlog", func(t *testing.T) {
		oldKey, newKey := newSigner(t, 1), newSigner(t, 2)
		now := time.Unix(1700000000, 0)
		src := newSerialSource(limit)
		sign := func(s *signer, e controlevent.Event) {
			src.Add(s.sign(e))
			oldKey.head, newKey.head = s.head, s.head
		}
		for cv := uint64(1); cv <= 7; cv++ {
			sign(oldKey, ev(cv, typ))
		}
		add, err := trust.AddKeyEvent(newKey.key.Public(), now)
		if err != nil {
			t.Fatal(err)
		}
		add.ControlVersion = 8 // ends a full batch: 9..16 is polled ahead with the old keys
		sign(oldKey, add)
		for cv := uint64(9); cv <= 11; cv++ {
			sign(newKey, ev(cv, typ))
		}
		revoke, err := trust.RevokeKeyEvent(oldKey.key.ID(), now)
		if err != nil {
			t.Fatal(err)
		}
		revoke.ControlVersion = 12
		sign(newKey, revoke)
		for cv := uint64(13); cv <= 30; cv++ {
			sign(newKey, ev(cv, typ))
		}
		db, _ := openDB(t)
		a := newApplier(t, db, src, nil, newInsertHandler(), mod(oldKey.keyring(t)))
		if err := drain(t, a); err != nil {
			t.Fatalf("rotation in the backlog: %v (checks made with the keys before the key event were used after it?)", err)
		}
		if c := cursorOf(t, db); c != 30 {
			t.Fatalf("cursor %d, want 30", c)
		}
		// The revoked key signs the next event: refused.
		src.Add(oldKey.sign(ev(31, typ)))
		if err := drain(t, a); !errors.Is(err, applier.ErrSecurityHalted) || a.Status().Halted.Security != "unknown-key" {
			t.Fatalf("event by the revoked key: %v", err)
		}
	})
}
