//go:build !linux

package filesource

import (
	"context"
	"errors"
)

// watcher is unavailable outside Linux: the index lists the directory on
// every refresh instead.
type watcher struct{}

func newWatcher(string) (*watcher, error) {
	return nil, errors.New("inotify is only available on Linux")
}

func (*watcher) close() error                   { return nil }
func (*watcher) drain() ([]string, bool, error) { return nil, false, nil }
func (*watcher) wait(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
