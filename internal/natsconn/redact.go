package natsconn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// redacted replaces a secret wherever controlfeed prints a NATS address or
// an error that may quote one.
const redacted = "REDACTED"

// RedactURLs returns the comma-separated form of urls with every secret in
// their user information replaced by "REDACTED": the password of
// nats://user:password@host, and the whole user part of nats://token@host
// (NATS reads a user without a password as a token). Use it for every URL
// that goes into a log line, an error or a status. A URL that does not
// parse is redacted from its last "@" back to its scheme, since it may still
// hold a secret.
func RedactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = redactURL(strings.TrimSpace(raw))
	}
	return strings.Join(out, ",")
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" && strings.Contains(raw, "@") {
		at := strings.LastIndex(raw, "@")
		if at < 0 {
			return raw
		}
		start := strings.Index(raw, "://")
		if start < 0 || start > at {
			start = 0
		} else {
			start += len("://")
		}
		return raw[:start] + redacted + raw[at:]
	}
	if u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else {
		u.User = url.User(redacted)
	}
	return u.String()
}

// secrets returns the secrets in urls and auth, longest first so that one
// that contains another is replaced whole.
func secrets(urls []string, auth Auth) []string {
	var s []string
	add := func(v string) {
		if v != "" {
			s = append(s, v, url.QueryEscape(v), url.PathEscape(v))
		}
	}
	add(auth.Password)
	for _, raw := range urls {
		raw = strings.TrimSpace(raw)
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok {
				add(p)
			} else {
				add(u.User.Username())
			}
			continue
		}
		// Unparseable: everything between the scheme and the last "@".
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			start := strings.Index(raw, "://")
			if start < 0 || start > at {
				start = -len("://")
			}
			user := raw[start+len("://") : at]
			if c := strings.IndexByte(user, ':'); c >= 0 {
				add(user[c+1:])
			} else {
				add(user)
			}
		}
	}
	// Longest first.
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && len(s[j]) > len(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// scrubbed is an error whose message has its secrets replaced; errors.Is
// and errors.As still see the original.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// Scrub returns err with every secret of urls and auth (passwords, URL
// tokens) replaced by "REDACTED" in its message, so it can be logged or
// returned to a user. errors.Is and errors.As see through it. Scrub of nil
// is nil.
func Scrub(err error, urls []string, auth Auth) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets(urls, auth) {
		if strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, redacted)
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}

// Connect connects to urls with opts. Its error names the servers with
// RedactURLs and is scrubbed of auth's and the URLs' secrets (Scrub), so it
// is safe to log; what is the prefix of the error, e.g. "natsfeed: source".
//
// The whole initial connect, over every server of urls, ends within the
// connect timeout of opts (nats.Timeout; nats.go's default if unset): each
// server in turn gets an equal share of the time left, so servers that
// accept and never answer cannot make it last one timeout each. Reconnects
// give each server the whole timeout, as nats.go does. Options that bring
// their own dialer (nats.SetCustomDialer) keep nats.go's per-server bound.
// A URL whose scheme is not nats, tls, ws or wss is refused before any
// connection is made.
func Connect(what string, urls []string, auth Auth, opts ...nats.Option) (*nats.Conn, error) {
	if len(urls) == 0 {
		return nil, errors.New(what + ": connect: no NATS server URL (set --nats-url)")
	}
	for _, u := range urls {
		if err := checkScheme(u); err != nil {
			return nil, Scrub(fmt.Errorf("%s: connect %s: %w", what, RedactURLs(urls), err), urls, auth)
		}
	}
	budget := newConnectBudget(len(urls), opts)
	if budget != nil {
		opts = append(opts[:len(opts):len(opts)], nats.SetCustomDialer(budget))
		if budget.lookup {
			opts = append(opts, nats.SkipHostLookup()) // the budget's Dial resolves: one Dial per server
		}
		defer budget.done()
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		switch {
		case budget != nil && isTimeout(err):
			shared := ""
			if len(urls) > 1 {
				shared = ", each server in turn an equal share of what was left"
			}
			err = fmt.Errorf("no server completed the connect within the connect timeout %v%s: %w", budget.dialer.Timeout, shared, err)
		case errors.Is(err, nats.ErrNoServers):
			err = fmt.Errorf("no server accepted the connection (refused or unreachable): check the addresses in --nats-url and that a nats-server runs there "+
				"(\"controlfeed nats-server\" runs one): %w", err)
		case errors.Is(err, nats.ErrAuthorization):
			err = fmt.Errorf("the server refused this client's credentials: check --nats-user and --nats-password (CONTROLFEED_NATS_PASSWORD), or --nats-creds: %w", err)
		}
		return nil, Scrub(fmt.Errorf("%s: connect %s: %w", what, RedactURLs(urls), err), urls, auth)
	}
	return nc, nil
}

// checkScheme refuses a server URL whose scheme nats.go does not speak
// (nats.go would try it as a plain address and fail, or succeed, for another
// reason than the one the user meant). A URL without "://" is a host:port,
// which nats.go reads as nats://host:port.
func checkScheme(raw string) error {
	raw = strings.TrimSpace(raw)
	if i := strings.IndexAny(raw, "; \t"); i >= 0 {
		return fmt.Errorf("server URL %s contains %q: separate several URLs with commas", redactURL(raw), raw[i:i+1])
	}
	i := strings.Index(raw, "://")
	if i < 0 {
		return nil
	}
	switch strings.ToLower(raw[:i]) {
	case "nats", "tls", "ws", "wss":
		return nil
	}
	return fmt.Errorf("server URL %s: unknown scheme %q: use nats://, tls://, ws:// or wss:// (or host:port)", redactURL(raw), raw[:i])
}

// isTimeout reports whether err is a deadline that ran out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
