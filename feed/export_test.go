package feed

// Unregister removes name from both registries, so that a test can
// register its own backends and leave the registry as it found it (also
// with -count > 1).
func Unregister(name string) {
	mu.Lock()
	defer mu.Unlock()
	delete(sources, name)
	delete(sinks, name)
}
