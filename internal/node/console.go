package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/console"
)

// consoleReader holds what the console reads besides the node itself: a
// report store (the reporter's, or one opened on first use by a process
// that does not report, e.g. a producer) and a read-only feed source of its
// own (never the applier's: a jetstream observer has no durable consumer),
// both opened on first use and closed by Close.
type consoleReader struct {
	mu    sync.Mutex
	kind  string // the feed backend: FeedSource, or FeedSink for a producer
	store fleet.Store
	src   feed.Source
	tried bool
}

// consoleKind returns the feed backend whose reports and events the
// console shows, "" if none.
func (c *Config) consoleKind() string {
	for _, k := range []string{c.FeedSource, c.FeedSink} {
		if k != "" && k != nop.Name {
			return k
		}
	}
	return ""
}

// newConsole returns the node's console (see package console).
func (n *Node) newConsole() *console.Console {
	cfg := console.Config{Title: n.cfg.NodeName, Logger: n.log}
	n.cons.kind = n.cfg.consoleKind()
	if n.cons.kind != "" {
		cfg.Fleet = n.consoleFleet
		cfg.Events = n.consoleEvents
	}
	if n.pump != nil {
		cfg.Producer = func(ctx context.Context) (console.ProducerSnapshot, error) {
			s, err := n.Status(ctx)
			p := console.ProducerSnapshot{Pending: s.OutboxPending, Dead: s.OutboxDead}
			if pr := s.Process; pr != nil {
				p.Published, p.LastError = pr.Published, pr.PumpLastError
				if pr.PumpError != "" {
					p.LastError = pr.PumpError
				}
			}
			return p, err
		}
	}
	return console.New(cfg)
}

// open opens the store and source on first use; later calls return them.
func (n *Node) consoleOpen(ctx context.Context) (fleet.Store, feed.Source) {
	c := &n.cons
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tried {
		return cmpStore(n.reports, c.store), c.src
	}
	c.tried = true
	if n.reports == nil {
		st, err := fleet.Open(ctx, c.kind, fleet.Config{Feed: n.cfg.Feed, Logger: n.log})
		if err != nil {
			n.log.Warn("node: console: cannot open the fleet report store", "feed", c.kind, "err", err)
		} else {
			c.store = st
		}
	}
	cfg := n.cfg.Feed
	cfg.NATS.NodeName = "" // jetstream: an ephemeral, read-only consumer
	if src, err := feed.Open(c.kind, cfg); err != nil {
		n.log.Warn("node: console: cannot read the feed: its head and latest events are unknown", "feed", c.kind, "err", err)
	} else {
		c.src = src
	}
	return cmpStore(n.reports, c.store), c.src
}

func cmpStore(a, b fleet.Store) fleet.Store {
	if a != nil {
		return a
	}
	return b
}

// consoleMaxEventTimes bounds the distinct cursors whose next event one
// fleet read fetches for the lag in seconds (as controlfeed fleet does).
const consoleMaxEventTimes = 64

func (n *Node) consoleFleet(ctx context.Context) (console.FleetSnapshot, error) {
	st, src := n.consoleOpen(ctx)
	var s console.FleetSnapshot
	if st == nil {
		return s, fmt.Errorf("node: console: no fleet report store for feed %q (see the log)", n.cons.kind)
	}
	es, err := st.List(ctx)
	if errors.Is(err, fleet.ErrNoStore) {
		es, err = nil, nil
	}
	if err != nil && len(es) == 0 {
		return s, fmt.Errorf("node: console: read the node reports: %w", err)
	}
	if err != nil {
		s.Errors = append(s.Errors, err.Error())
	}
	if hr, ok := src.(feed.HeadReporter); ok {
		if h, err := hr.Head(ctx); err == nil {
			s.Head = h
		}
	}
	times := map[uint64]*time.Time{}
	s.Rows = fleet.View(es, fleet.ViewConfig{Head: s.Head, EventTime: func(cursor uint64) (time.Time, bool) {
		t, seen := times[cursor]
		if !seen && len(times) < consoleMaxEventTimes && src != nil {
			if evs, err := src.Poll(ctx, cursor); err == nil && len(evs) > 0 && !evs[0].CreatedAt.IsZero() {
				t = &evs[0].CreatedAt
			}
			times[cursor] = t
		}
		if t == nil {
			return time.Time{}, false
		}
		return *t, true
	}})
	for _, r := range s.Rows {
		s.Head = max(s.Head, r.Cursor+r.LagEvents)
	}
	return s, nil
}

func (n *Node) consoleEvents(ctx context.Context, k int) ([]controlevent.Event, error) {
	_, src := n.consoleOpen(ctx)
	hr, ok := src.(feed.HeadReporter)
	if !ok {
		return nil, nil
	}
	h, err := hr.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: console: read the feed's head: %w", err)
	}
	since := uint64(0)
	if h > uint64(k) {
		since = h - uint64(k)
	}
	evs, err := src.Poll(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("node: console: read the feed after %d: %w", since, err)
	}
	return evs, nil
}

// closeConsole closes what the console opened.
func (n *Node) closeConsole() []error {
	c := &n.cons
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.store != nil {
		errs = append(errs, closeQuietly(c.store))
		c.store = nil
	}
	if c.src != nil {
		errs = append(errs, closeQuietly(c.src))
		c.src = nil
	}
	return errs
}
