package filesource

// SetDisableWatcher switches new Sources and Sinks to the no-inotify
// fallback (tests only; not concurrent-safe with opening).
func SetDisableWatcher(v bool) (restore func()) {
	old := disableWatcher
	disableWatcher = v
	return func() { disableWatcher = old }
}

// UsesWatcher reports whether s uses change notification.
func (s *Source) UsesWatcher() bool { return s.ix.w != nil }
