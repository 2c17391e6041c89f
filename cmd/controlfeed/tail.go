package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/feed/nop"
)

// defaultTailPoll is how often tail polls a source that cannot Wait.
const defaultTailPoll = 500 * time.Millisecond

var tailCmd = &command{
	name:    "tail",
	summary: "print a feed's events as they arrive",
	details: `Reads the feed --feed-source from the event after --from and prints each
event on one line: control_version, type, key, event_id, created_at
(tab-separated; an empty key prints as "-"), or with --json the event as one
JSON object per line. With --follow (the default) it then waits for new
events until interrupted; --follow=false exits after the last event. It only
reads: it applies nothing and acknowledges nothing. A message of the feed
that is not a valid event (a bad file, another publisher's message) prints
as "control_version INVALID - event_id reason" (with --json, an object with
"invalid": true, "control_version", "event_id" and "error"), and tail goes
on after it; a node would halt there. --feed-dir alone means --feed-source
file.

On jetstream, tail reads through an ephemeral consumer without acks that
the server removes a few minutes after tail exits: it never touches the
durable consumer of any node, so it is safe to run against a live fleet.`,
	example: `controlfeed tail --feed-source file --feed-dir /var/lib/cf/feed --from 100`,
	settings: settingList([]string{"feed-source", "feed-dir"}, natsSettings, []string{"nats-stream", "nats-subject",
		"from", "json", "follow", "poll-interval", "log-format", "log-level"}),
}

func (m *Main) runTail(ctx context.Context, args []string) error {
	var s settings
	pos, err := tailCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed tail: unexpected argument %q", pos[0])
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	s.defaultReadFeed()
	if s.FeedSource == nop.Name {
		return usageErrorf("controlfeed tail: --feed-source is %q, which has no events: give --feed-source file --feed-dir DIR, or --feed-source jetstream with --nats-url", nop.Name)
	}
	if err := s.checkBackends(tailCmd); err != nil {
		return err
	}
	s.logDefaultNATSURL(tailCmd, log)
	cfg := s.feedConfig()
	cfg.NATS.NodeName = "" // jetstream: an ephemeral, read-only consumer
	src, err := feed.Open(s.FeedSource, cfg)
	if err != nil {
		return s.natsTimeoutHint(tailCmd, err)
	}
	defer closeQuietly(src)
	if err := m.notePastHead(ctx, src, s.From, s.Follow); err != nil {
		return s.natsTimeoutHint(tailCmd, err)
	}
	interval := s.PollInterval
	if interval <= 0 {
		interval = defaultTailPoll
	}
	err = tail(ctx, src, s.From, s.Follow, interval, func(e controlevent.Event) error {
		return m.printEvent(e, s.JSON)
	}, func(ie *feed.InvalidEventError) error {
		return m.printInvalid(ie, s.JSON)
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // interrupted: the normal end of --follow
	}
	var behind *feed.CursorBehindError
	if errors.As(err, &behind) {
		return fmt.Errorf("controlfeed tail: --from %d is behind the feed's retention: the oldest event it holds is %d; "+
			"run with --from %d or more", behind.Cursor, behind.FirstAvailable, behind.FirstAvailable-1)
	}
	return s.natsTimeoutHint(tailCmd, err)
}

// notePastHead tells the operator, on stderr, when --from is past the
// feed's newest event: a typo or a feed other than the one meant, not a
// retention problem. It is a note, not an error: with --follow, tail waits
// for the events after from. A source that does not report its head is not
// checked.
func (m *Main) notePastHead(ctx context.Context, src feed.Source, from uint64, follow bool) error {
	hr, ok := src.(feed.HeadReporter)
	if !ok || from == 0 {
		return nil
	}
	head, err := hr.Head(ctx)
	if err != nil {
		return fmt.Errorf("controlfeed tail: read the head of %s: %w", src.Name(), err)
	}
	if from <= head {
		return nil
	}
	then := "nothing to print"
	if follow {
		then = fmt.Sprintf("waiting for event %d", from+1)
	}
	fmt.Fprintf(m.Stderr, "controlfeed tail: --from %d is past the feed's newest event %d: %s\n", from, head, then)
	return nil
}

// tail calls print for every event of src after from, in order, and
// invalid for every message of the feed that is not a valid event (then goes
// on after it: tail shows the feed, it does not apply it). It returns once
// the feed has no more events unless follow, in which case it waits for more
// with feed.Waiter when src implements it, else polls every interval.
func tail(ctx context.Context, src feed.Source, from uint64, follow bool, interval time.Duration,
	print func(controlevent.Event) error, invalid func(*feed.InvalidEventError) error) error {
	cursor := from
	waiter, _ := src.(feed.Waiter)
	for {
		events, err := src.Poll(ctx, cursor)
		var ie *feed.InvalidEventError
		if errors.As(err, &ie) && ie.ControlVersion > cursor {
			for _, e := range events { // the valid ones before it, if the source returned them
				if e.ControlVersion < ie.ControlVersion && e.ControlVersion > cursor {
					if err := print(e); err != nil {
						return err
					}
					cursor = e.ControlVersion
				}
			}
			if err := invalid(ie); err != nil {
				return err
			}
			cursor = ie.ControlVersion
			continue
		}
		if err != nil {
			return fmt.Errorf("controlfeed tail: poll %s after %d: %w", src.Name(), cursor, err)
		}
		for _, e := range events {
			if e.ControlVersion <= cursor {
				return fmt.Errorf("controlfeed tail: %s returned control_version %d after %d: feed out of order", src.Name(), e.ControlVersion, cursor)
			}
			if err := print(e); err != nil {
				return err
			}
			cursor = e.ControlVersion
		}
		if len(events) > 0 {
			continue
		}
		if !follow {
			return nil
		}
		if waiter != nil {
			if err := waiter.Wait(ctx, cursor); err != nil {
				return err
			}
			continue
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// invalidLine is the --json form of a feed message that is not a valid
// event: "invalid" is always true, so a consumer can tell it from an event.
type invalidLine struct {
	Invalid        bool   `json:"invalid"`
	ControlVersion uint64 `json:"control_version"`
	EventID        string `json:"event_id"`
	Error          string `json:"error"`
}

// printInvalid prints a message that is not a valid event: in text,
// "CV\tINVALID\t-\tEVENT_ID\tERROR"; with --json, an invalidLine.
func (m *Main) printInvalid(ie *feed.InvalidEventError, asJSON bool) error {
	reason := fmt.Sprint(ie.Err)
	if asJSON {
		b, err := json.Marshal(invalidLine{Invalid: true, ControlVersion: ie.ControlVersion, EventID: ie.EventID, Error: reason})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(m.Stdout, "%d\tINVALID\t-\t%s\t%s\n", ie.ControlVersion, ie.EventID, printable(reason))
	return err
}

func (m *Main) printEvent(e controlevent.Event, asJSON bool) error {
	if asJSON {
		b, err := controlevent.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
		return err
	}
	key := e.Key
	if key == "" {
		key = "-"
	}
	_, err := fmt.Fprintf(m.Stdout, "%d\t%s\t%s\t%s\t%s\n", e.ControlVersion, e.Type, printable(key), e.EventID,
		e.CreatedAt.UTC().Format(time.RFC3339Nano))
	return err
}

// defaultReadFeed makes --feed-dir without --feed-source mean the file
// feed, and else an explicit --nats-url (flag or environment) mean
// jetstream, for the commands that only read a feed (tail, fleet, snapshot
// list and restore). An explicit --feed-source always wins.
func (s *settings) defaultReadFeed() {
	if (s.FeedSource != nop.Name && s.FeedSource != "") || s.set["feed-source"] {
		return
	}
	switch {
	case s.FeedDir != "":
		s.FeedSource = filesource.Name
	case s.set["nats-url"] || os.Getenv(envName("nats-url")) != "":
		s.FeedSource = natsfeed.Name
	}
}
