package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

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
--listen asked for port 0).

Alone it is a single server. With --cluster-name, --cluster-listen and
--routes it is one member of a NATS cluster with clustered JetStream, so a
replicated broker (--nats-replicas 3 on the producer) needs nothing but
this binary: run it on three machines with the same --cluster-name and
--routes (the three members' nats-route://host:port addresses), each with
its own --server-name and --store. The cluster serves JetStream once two of
the three run. Clients list every member in --nats-url.`,
	example: `controlfeed nats-server --listen 127.0.0.1:4222 --store /var/lib/cf/nats
  controlfeed nats-server --listen 10.0.0.1:4222 --store /var/lib/cf/nats --server-name cf1 \
    --cluster-name cf --cluster-listen 10.0.0.1:6222 \
    --routes nats-route://10.0.0.1:6222,nats-route://10.0.0.2:6222,nats-route://10.0.0.3:6222`,
	settings: []string{"listen", "store", "cluster-name", "cluster-listen", "routes", "server-name", "log-format", "log-level"},
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
	opts := natsembed.Options{
		Listen:        cmp.Or(s.Listen, defaultNATSListen),
		StoreDir:      s.Store,
		Logger:        s.quietLogger(m.Stderr, log),
		ServerName:    cmp.Or(s.ServerName, "controlfeed"),
		ClusterName:   s.ClusterName,
		ClusterListen: s.ClusterListen,
	}
	for r := range strings.SplitSeq(s.Routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			opts.Routes = append(opts.Routes, r)
		}
	}
	if opts.ClusterListen != "" && !s.set["server-name"] {
		return usageErrorf("controlfeed nats-server: --cluster-listen needs --server-name (or CONTROLFEED_SERVER_NAME), unique in the cluster")
	}
	if err := opts.Validate(); err != nil {
		return usageErrorf("controlfeed nats-server: %v (see controlfeed nats-server --help)", err)
	}
	srv, err := natsembed.Start(opts)
	if err != nil {
		return fmt.Errorf("controlfeed nats-server: %w", err)
	}
	defer srv.Shutdown()
	if opts.ClusterListen != "" {
		log.Info("NATS cluster member started; JetStream serves once a majority of the members run",
			"server_name", opts.ServerName, "cluster", opts.ClusterName, "cluster_listen", srv.ClusterAddr(), "routes", opts.Routes)
	}
	log.Info("NATS JetStream server ready", "url", srv.ClientURL(), "store", s.Store)
	if _, err := fmt.Fprintf(m.Stdout, "nats-server ready: %s\n", srv.ClientURL()); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("NATS JetStream server stopping")
	return nil
}
