package main

import (
	"cmp"
	"context"
	"fmt"

	"github.com/controlfeed/controlfeed/internal/natsembed"
)

var natsServerCmd = &command{
	name:    "nats-server",
	summary: "run only an embedded NATS JetStream server, a broker for the jetstream backends",
	details: `Runs a NATS server with JetStream enabled in this process, and nothing else,
until SIGINT or SIGTERM. Producers and nodes connect to it with
--nats-url and use --feed-sink/--feed-source jetstream and --artifact-store
jetstream. Its streams, consumers and buckets live in --store: a server
restarted on the same directory finds everything it acknowledged (never run
two servers on one directory).

Once it accepts connections it prints one line on stdout,
"nats-server ready: URL", with the URL clients use (the actual port when
--listen asked for port 0). It is a single server: for a replicated
production broker run a NATS cluster instead (see the README).`,
	example:  `controlfeed nats-server --listen 127.0.0.1:4222 --store /var/lib/cf/nats`,
	settings: []string{"listen", "store", "log-format", "log-level"},
	env:      map[string]string{"listen": envPrefix + "NATS_SERVER_LISTEN"},
	override: map[string]flagHelp{
		"listen": {usage: "client `ADDR` of the NATS server (port 0 = random)", show: defaultNATSListen},
	},
}

func (m *Main) runNATSServer(ctx context.Context, args []string) error {
	var s settings
	pos, err := natsServerCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed nats-server: unexpected argument %q", pos[0])
	}
	if s.Store == "" {
		return usageErrorf("controlfeed nats-server: --store is required (or CONTROLFEED_STORE)")
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	srv, err := natsembed.Start(natsembed.Options{
		Listen:     cmp.Or(s.Listen, defaultNATSListen),
		StoreDir:   s.Store,
		Logger:     s.quietLogger(m.Stderr, log),
		ServerName: "controlfeed",
	})
	if err != nil {
		return fmt.Errorf("controlfeed nats-server: %w", err)
	}
	defer srv.Shutdown()
	log.Info("NATS JetStream server ready", "url", srv.ClientURL(), "store", s.Store)
	if _, err := fmt.Fprintf(m.Stdout, "nats-server ready: %s\n", srv.ClientURL()); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("NATS JetStream server stopping")
	return nil
}
