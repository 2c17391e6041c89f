package feed

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Constructor builds a Source from resolved configuration.
type Constructor func(SourceConfig) (Source, error)

// SinkConstructor builds a Sink from resolved configuration. It receives the
// same SourceConfig as the read side.
type SinkConstructor func(SourceConfig) (Sink, error)

var (
	mu      sync.RWMutex
	sources = map[string]Constructor{}
	sinks   = map[string]SinkConstructor{}
)

// Register makes a Source backend available under name. It is meant to be
// called from a backend package's init(). It panics if name is empty, if c is
// nil, or if name is already registered: a wiring bug fails at start-up.
func Register(name string, c Constructor) {
	mu.Lock()
	defer mu.Unlock()
	checkRegister("source", name, c == nil, sources[name] != nil)
	sources[name] = c
}

// RegisterSink makes a Sink backend available under name, with the same rules
// as Register.
func RegisterSink(name string, c SinkConstructor) {
	mu.Lock()
	defer mu.Unlock()
	checkRegister("sink", name, c == nil, sinks[name] != nil)
	sinks[name] = c
}

func checkRegister(kind, name string, nilCtor, dup bool) {
	switch {
	case name == "":
		panic("feed: register " + kind + ": empty name")
	case nilCtor:
		panic(fmt.Sprintf("feed: %s %q registered with a nil constructor", kind, name))
	case dup:
		panic(fmt.Sprintf("feed: %s %q registered twice", kind, name))
	}
}

// Open constructs the Source backend registered under name. An unknown name
// is an error naming it and listing the registered names; a constructor error
// is returned wrapped with the backend's name.
func Open(name string, cfg SourceConfig) (Source, error) {
	mu.RLock()
	c, ok := sources[name]
	mu.RUnlock()
	if !ok {
		return nil, unknown("source", name, Sources())
	}
	s, err := c(cfg)
	if err != nil {
		return nil, fmt.Errorf("feed: open source %q: %w", name, err)
	}
	return s, nil
}

// OpenSink constructs the Sink backend registered under name, with the same
// rules as Open.
func OpenSink(name string, cfg SourceConfig) (Sink, error) {
	mu.RLock()
	c, ok := sinks[name]
	mu.RUnlock()
	if !ok {
		return nil, unknown("sink", name, Sinks())
	}
	s, err := c(cfg)
	if err != nil {
		return nil, fmt.Errorf("feed: open sink %q: %w", name, err)
	}
	return s, nil
}

// Sources returns the sorted names of the registered Source backends.
func Sources() []string {
	mu.RLock()
	defer mu.RUnlock()
	return sortedKeys(sources)
}

// Sinks returns the sorted names of the registered Sink backends.
func Sinks() []string {
	mu.RLock()
	defer mu.RUnlock()
	return sortedKeys(sinks)
}

func sortedKeys[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func unknown(kind, name string, avail []string) error {
	list := strings.Join(avail, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Errorf("feed: unknown %s %q (forgotten import?); available: %s", kind, name, list)
}
