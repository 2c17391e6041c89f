package artifact

import (
	"fmt"
	"strings"
)

// LocateFunc returns the location of the storage that a Store opened with
// cfg would read and write: a string that is equal for two configurations
// exactly when they name the same storage of the same backend (the file
// backend's absolute directory, the jetstream backend's bucket), after the
// backend's defaults are applied. It must neither open, create nor contact
// anything, so that a caller can compare locations before a Put stores
// anything. Parts of cfg that only say how to reach the storage (server
// URLs, credentials, timeouts) are not part of the location.
type LocateFunc func(Config) (string, error)

var locators = map[string]LocateFunc{}

// RegisterLocate makes Locate answer for the Store backend name; call it
// from the backend's init(), beside Register. It panics on an empty name, a
// nil function or a duplicate name.
func RegisterLocate(name string, f LocateFunc) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case name == "":
		panic("artifact: RegisterLocate called with an empty name")
	case f == nil:
		panic(fmt.Sprintf("artifact: store %q registered a nil locate function", name))
	case locators[name] != nil:
		panic(fmt.Sprintf("artifact: store %q registered its locate function twice", name))
	}
	locators[name] = f
}

// Locate returns the location (see LocateFunc) of the storage the backend
// name would use with cfg, without opening it. An unknown name is an error
// naming it and listing the registered names; so is a backend that
// registered no locate function.
func Locate(name string, cfg Config) (string, error) {
	mu.RLock()
	f, ok := locators[name]
	mu.RUnlock()
	if !ok {
		list := strings.Join(Stores(), ", ")
		if list == "" {
			list = "none"
		}
		return "", fmt.Errorf("artifact: locate store %q: no such store, or it cannot tell its location (forgotten import?); available: %s", name, list)
	}
	loc, err := f(cfg)
	if err != nil {
		return "", fmt.Errorf("artifact: locate store %q: %w", name, err)
	}
	return loc, nil
}
