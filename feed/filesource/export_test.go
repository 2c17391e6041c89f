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

// SetHookBeforeRename runs f before every Sink rename of a temporary file
// to its final path (tests only; not concurrent-safe with appending).
func SetHookBeforeRename(f func(path string)) (restore func()) {
	old := testHookBeforeRename
	testHookBeforeRename = f
	return func() { testHookBeforeRename = old }
}

// SetNoSync makes Sinks skip their fsyncs (tests only: stress runs).
func SetNoSync(v bool) (restore func()) {
	old := testNoSync
	testNoSync = v
	return func() { testNoSync = old }
}

// MarkerName is the prune marker's file name.
const MarkerName = markerName
