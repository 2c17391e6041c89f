package main

// listenSettings are serve's flags protecting its HTTP listener (see
// node.Config.ListenToken and ListenTLSCertFile).
var listenSettings = []string{"listen-token", "listen-tls-cert", "listen-tls-key"}

func init() {
	allSettings = append(allSettings,
		strSetting("listen-token", "", "bearer `TOKEN` required by /v1/status and /metrics, at least 16 characters (prefer the environment variable: flags show in ps); /healthz stays open but hides its reasons",
			func(s *settings) *string { return &s.ListenToken }),
		strSetting("listen-tls-cert", "", "certificate chain `FILE` (PEM) to serve the HTTP listener over TLS (with --listen-tls-key)",
			func(s *settings) *string { return &s.ListenTLSCert }),
		strSetting("listen-tls-key", "", "private key `FILE` (PEM) of --listen-tls-cert; keep it mode 0600",
			func(s *settings) *string { return &s.ListenTLSKey }),
	)
}
