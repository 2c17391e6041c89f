package chaos

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/trust"
)

// Forged kinds: the bad inputs of a signed run (Config.Signed), written by
// an attacker with publish rights on the stream, not by the producer. Each
// is named by the reason every node must refuse it with (trust.Reason).
//
// A signed run injects only these: the legitimate bad inputs (conflict,
// unknown type, poison, missing and corrupt artifacts) are published by the
// harness straight to the stream, so under signing they would be refused as
// unsigned and test nothing of their own; the unsigned runs keep them.
const (
	ForgedUnsigned   = "unsigned"      // a producer event's content, signature stripped, under a new EventID
	ForgedUnknownKey = "unknown-key"   // signed by a key the nodes do not trust
	ForgedAltered    = "bad-signature" // the producer's valid signature over altered fields (EventID, key), under a new Msg-Id
	// ForgedReplay is a signed producer event the nodes applied, published
	// again without a Msg-Id (past the broker's deduplication): the
	// design passes it as a duplicate with nothing applied (the checker's
	// first-copy rule proves it), so it is counted, not halted at.
	ForgedReplay = "replay"
)

var forgedKinds = []string{ForgedUnsigned, ForgedUnknownKey, ForgedAltered, ForgedReplay, ForgedDropped, ForgedSwapped}

func isForged(kind string) bool {
	for _, k := range forgedKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// setupSigning writes the producer's key pair for a signed run and makes
// the attacker's key, returning the pump's and the nodes' extra flags.
func (h *harness) setupSigning() (pumpArgs, nodeArgs []string, err error) {
	k, err := trust.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("chaos: generate the producer's signing key: %w", err)
	}
	if h.attacker, err = trust.GenerateKey(rand.Reader); err != nil {
		return nil, nil, fmt.Errorf("chaos: generate the attacker's key: %w", err)
	}
	priv, pub := filepath.Join(h.dir, "signing.key"), filepath.Join(h.dir, "signing.pub")
	if err := os.WriteFile(priv, trust.MarshalPrivateKey(k), 0o600); err != nil {
		return nil, nil, fmt.Errorf("chaos: write the signing key: %w", err)
	}
	if err := os.WriteFile(pub, trust.MarshalPublicKey(k.Public()), 0o644); err != nil {
		return nil, nil, fmt.Errorf("chaos: write the trusted key: %w", err)
	}
	if h.ring, err = trust.NewKeyring(k.Public()); err != nil {
		return nil, nil, fmt.Errorf("chaos: keyring of the producer's key: %w", err)
	}
	return []string{"--signing-key", priv}, []string{"--trust-key", pub}, nil
}

// signedOlds returns up to n random producer events as the pump signed
// them: the stream's first copies of outbox rows published at or before
// maxCV.
func (h *harness) signedOlds(ctx context.Context, maxCV uint64, n int) ([]controlevent.Event, error) {
	rows, err := h.producer().QueryContext(ctx, `SELECT event_id, published_control_version FROM controlfeed_outbox
		WHERE published_control_version IS NOT NULL AND published_control_version <= ? ORDER BY random() LIMIT ?`, int64(maxCV), n)
	if err != nil {
		return nil, fmt.Errorf("pick published events: %w", err)
	}
	type pub struct {
		id string
		cv int64
	}
	var ps []pub
	for rows.Next() {
		var p pub
		if err := rows.Scan(&p.id, &p.cv); err != nil {
			rows.Close()
			return nil, err
		}
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []controlevent.Event
	for _, p := range ps {
		e, err := h.storedEvent(ctx, uint64(p.cv))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted by a dropped or swapped injection (hostile.go)
		}
		if err != nil {
			return out, fmt.Errorf("read event %s at %d: %w", p.id, p.cv, err)
		}
		if e.EventID != p.id || !strings.Contains(e.Extra, `"`+trust.SignatureMember+`"`) {
			return out, fmt.Errorf("stream position %d holds %q, not the producer's signed %s", p.cv, e.EventID, p.id)
		}
		out = append(out, e)
	}
	return out, nil
}

// injectForged publishes one forged input of kind straight to the stream.
func (h *harness) injectForged(ctx context.Context, kind string, i int) (injection, error) {
	if kind == ForgedDropped || kind == ForgedSwapped {
		return h.injectHostile(ctx, kind)
	}
	inj := injection{kind: kind}
	maxCV := samples.before(h.cfg.DupWindow + time.Second)
	if maxCV == 0 {
		return inj, errors.New("no event old enough yet")
	}
	olds, err := h.signedOlds(ctx, maxCV, 1)
	if err != nil || len(olds) == 0 {
		return inj, fmt.Errorf("pick a signed producer event: %v", err)
	}
	base := olds[0]
	newID := uuid.Must(uuid.NewV7()).String()
	e := base
	switch kind {
	case ForgedUnsigned:
		if e, err = trust.Unsigned(base); err != nil {
			return inj, err
		}
		e.EventID, e.Key = newID, fmt.Sprintf("chaos-forged/unsigned/%d", i)
	case ForgedUnknownKey:
		u, err := trust.Unsigned(base)
		if err != nil {
			return inj, err
		}
		u.EventID, u.Key = newID, fmt.Sprintf("chaos-forged/unknown-key/%d", i)
		if e, _, err = trust.Sign(h.attacker, u, trust.Head{Seq: 1, Digest: trust.Digest([]byte("attacker"))}); err != nil {
			return inj, err
		}
	case ForgedAltered:
		e.EventID, e.Key = newID, fmt.Sprintf("chaos-forged/altered/%d", i) // keeps the producer's signature
	case ForgedReplay:
		// The same signed bytes with no Msg-Id, so the broker stores them
		// again. (Under another Msg-Id than its event_id the node reads
		// the message as an invalid, unsigned placeholder and refuses it
		// as unsigned: natsfeed's decode rule.)
		newID = ""
	}
	ack, err := h.publishAs(ctx, e, newID)
	if err != nil {
		return inj, err
	}
	inj.id, inj.cv = e.EventID, ack.Sequence
	return inj, nil
}

// publishAs publishes e's wire form under Msg-Id msgID (none if empty: a
// retry may then store it twice, a duplicate the nodes pass), retrying
// while the broker is down, until ctx is done.
func (h *harness) publishAs(ctx context.Context, e controlevent.Event, msgID string) (*jetstream.PubAck, error) {
	e.ControlVersion = 0
	body, err := controlevent.Marshal(e)
	if err != nil {
		return nil, err
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		opts := []jetstream.PublishOpt{jetstream.WithExpectStream(natsfeed.DefaultStream)}
		if msgID != "" {
			opts = append(opts, jetstream.WithMsgID(msgID))
		}
		ack, err := h.js.PublishMsg(pctx, &nats.Msg{Subject: natsfeed.DefaultSubject, Data: body, Header: nats.Header{}}, opts...)
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// overrideSecurity is the operator's documented action at a security halt
// on node i (docs/SECURITY.md): a plain skip must be refused, then skip
// --security-override passes the event; every fifth injection goes through
// the controlfeed binary.
func (h *harness) overrideSecurity(ctx context.Context, i int, db *sql.DB, inj injection) error {
	if err := applier.Skip(ctx, db, inj.id); !errors.Is(err, applier.ErrSecurityHalted) {
		h.mu.Lock()
		h.rep.problem("node%d: plain skip of security halt %s %s@%d = %v, want it refused", i+1, inj.kind, inj.id, inj.cv, err)
		h.mu.Unlock()
	}
	if inj.cv%5 != 0 {
		return applier.SkipSecurityHalt(ctx, db, inj.id)
	}
	cmd := exec.CommandContext(ctx, h.cfg.Binary, "skip", "--security-override", "--db", h.nodeDBs[i], inj.id)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("controlfeed skip --security-override: %v: %s", err, out)
	}
	return nil
}
