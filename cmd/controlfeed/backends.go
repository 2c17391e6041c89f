package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/outbox"

	// Every backend the controlfeed command can use, activated by import
	// (filestore and natsobject above, by name). This is the only file
	// that imports backends; add new ones here.
	_ "github.com/controlfeed/controlfeed/feed/nop"
	_ "github.com/controlfeed/controlfeed/fleet/filefleet"
	_ "github.com/controlfeed/controlfeed/fleet/natsfleet"
	_ "github.com/controlfeed/controlfeed/snapshot/filecatalog"
	_ "github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

// defaultNATSURL is the server the jetstream backends connect to without
// --nats-url (their documented default).
const defaultNATSURL = nats.DefaultURL

// checkBackends rejects, in the command line's words and before anything is
// opened or created, a backend flag of cmd that names no registered backend
// and a file feed without --feed-dir. The backends would refuse both too,
// but in their library's words (a config field, "forgotten import?").
func (s *settings) checkBackends(cmd *command) error {
	for _, b := range []struct {
		flag, value string
		names       []string
	}{
		{"feed-source", s.FeedSource, feed.Sources()},
		{"feed-sink", s.FeedSink, feed.Sinks()},
		{"artifact-store", s.ArtifactStore, artifact.Stores()},
	} {
		if !slices.Contains(cmd.settings, b.flag) || slices.Contains(b.names, b.value) {
			continue
		}
		return usageErrorf("controlfeed %s: --%s %q (or %s): want one of %s\n%s",
			cmd.name, b.flag, b.value, cmd.envName(b.flag), strings.Join(b.names, ", "), cmd.usageLine())
	}
	for _, flag := range []string{"feed-source", "feed-sink"} {
		if !slices.Contains(cmd.settings, flag) || s.FeedDir != "" {
			continue
		}
		if v := s.value(flag); v == filesource.Name {
			return usageErrorf("controlfeed %s: --%s %s needs --feed-dir DIR (or %s), the directory of the file feed\n%s",
				cmd.name, flag, v, cmd.envName("feed-dir"), cmd.usageLine())
		}
	}
	return nil
}

// value returns the value of a backend flag.
func (s *settings) value(flag string) string {
	switch flag {
	case "feed-source":
		return s.FeedSource
	case "feed-sink":
		return s.FeedSink
	case "artifact-store":
		return s.ArtifactStore
	}
	return ""
}

// logDefaultNATSURL logs, when a jetstream backend of cmd is in use without
// --nats-url, the server it connects to, so that a forgotten flag shows.
func (s *settings) logDefaultNATSURL(cmd *command, log *slog.Logger) {
	if s.NATSURL != "" {
		return
	}
	var uses []string
	for _, b := range []struct{ flag, name string }{
		{"feed-source", natsfeed.Name}, {"feed-sink", natsfeed.Name}, {"artifact-store", natsobject.Name},
	} {
		if slices.Contains(cmd.settings, b.flag) && s.value(b.flag) == b.name {
			uses = append(uses, fmt.Sprintf("--%s %s", b.flag, b.name))
		}
	}
	if len(uses) > 0 {
		log.Info("no --nats-url given: connecting to the default NATS server", "nats_url", defaultNATSURL,
			"for", strings.Join(uses, ", "))
	}
}

// natsTimeoutHint adds to err, when it is a broker call of a jetstream
// backend of cmd that timed out, which deadline ended it and what to do:
// the backends' error names the operation and the connection, this names
// the flag. When the broker answered instead that JetStream has no leader
// for the call (a cluster without quorum, or electing), it says that.
func (s *settings) natsTimeoutHint(cmd *command, err error) error {
	if err == nil {
		return err
	}
	if !timedOut(err) {
		if (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoStreamResponse)) && s.usesJetStream(cmd) {
			return fmt.Errorf("%w\ncontrolfeed %s: no JetStream server stored the message: the stream (or the bucket) has no leader now (a majority of a cluster's servers "+
				"is down or still electing), or no stream stores its subject: check that a majority of the servers run (nats server report jetstream), then run the command again", err, cmd.name)
		}
		if noLeader(err) && s.usesJetStream(cmd) {
			return fmt.Errorf("%w\ncontrolfeed %s: the NATS broker answered that JetStream cannot serve the call now (no quorum or no leader: "+
				"a majority of a cluster's servers is down or still electing, which the broker reports within seconds): check that a majority of the servers run "+
				"and have a JetStream meta leader (nats server report jetstream), then run the command again", err, cmd.name)
		}
		return err
	}
	if !s.usesJetStream(cmd) {
		return err
	}
	limit := "the default " + natsfeed.DefaultRequestTimeout.String()
	if s.NATSTimeout > 0 {
		limit = s.NATSTimeout.String()
	}
	return fmt.Errorf("%w\ncontrolfeed %s: the NATS broker did not answer within --nats-timeout (%s; an artifact upload or download gets 1s more per MiB): "+
		"check that the servers are up and have a JetStream leader (nats server report jetstream), or raise --nats-timeout (%s)",
		err, cmd.name, limit, cmd.envName("nats-timeout"))
}

// usesJetStream reports whether cmd has a jetstream backend in s: a feed
// source or sink, or an artifact store.
func (s *settings) usesJetStream(cmd *command) bool {
	for _, b := range []struct{ flag, name string }{
		{"feed-source", natsfeed.Name}, {"feed-sink", natsfeed.Name}, {"artifact-store", natsobject.Name},
	} {
		if slices.Contains(cmd.settings, b.flag) && s.value(b.flag) == b.name {
			return true
		}
	}
	return false
}

// noLeader reports whether err is JetStream's answer that it cannot serve
// the call for now: no meta leader, no stream leader, no quorum (API
// errors 10008 "JetStream system temporarily unavailable", 10009 "not
// leader", 10118 "all peers offline"). JetStream not enabled, not in
// clustered mode, or a stream that failed to load is not one.
func noLeader(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10008, 10009, 10118: // system temporarily unavailable, not leader, all of a stream's peers offline
		return true
	}
	return false // a 503 may also be "JetStream not enabled": not an outage to wait out
}

// timedOut reports whether err is a deadline or timeout of a broker call.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.As(err, &ne) && ne.Timeout()
}

// describeStore names an artifact store as an operator configures it: "the
// file store at DIR", "the jetstream store (bucket "B")".
func describeStore(st outbox.ArtifactStore) string {
	switch st.Backend {
	case filestore.Name:
		return "the file store at " + st.Location
	case natsobject.Name:
		return fmt.Sprintf("the %s store (bucket %q)", st.Backend, st.Location)
	}
	return fmt.Sprintf("the %s store %q", st.Backend, st.Location)
}

// storeFlags returns the flags that select the artifact store st.
func storeFlags(st outbox.ArtifactStore) string {
	switch st.Backend {
	case filestore.Name:
		return "--artifact-store " + st.Backend + " --artifact-dir " + st.Location
	case natsobject.Name:
		return "--artifact-store " + st.Backend + " --nats-bucket " + st.Location
	}
	return "--artifact-store " + st.Backend
}
