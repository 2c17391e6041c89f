package failpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Environment variables read once, at package init.
const (
	// EnvSpec holds the spec enabled at start-up (see the package
	// documentation for the grammar).
	EnvSpec = "CONTROLFEED_FAILPOINTS"
	// EnvLog names the file that panic, exit and kill actions append the
	// point's name to before they fire.
	EnvLog = "CONTROLFEED_FAILPOINT_LOG"
)

// ErrInjected is wrapped by every error Inject returns and by the value a
// panic action panics with.
var ErrInjected = errors.New("injected failure")

type action int

const (
	actOff action = iota
	actPanic
	actKill
	actError
	actENOSPC
	actSleep
	actImage
)

// point is one enabled failure point.
type point struct {
	name  string
	act   action
	sleep time.Duration
	image string  // the path of an image action
	limit int64   // fire at most this many times; 0 = unlimited
	prob  float64 // fire with this probability; 0 = always
	term  string  // canonical text, for Spec

	fired atomic.Int64 // times the action fired (or was claimed, past limit)
}

// table is an immutable set of enabled points; Enable swaps in a new one.
type table struct {
	points map[string]*point
	spec   string

	rndMu sync.Mutex
	rnd   *rand.Rand
}

// active is nil when no point is enabled: the whole cost of a disabled
// Inject is loading it.
var active atomic.Pointer[table]

var (
	logMu   sync.Mutex
	logPath string
)

func init() {
	logPath = os.Getenv(EnvLog)
	if spec := os.Getenv(EnvSpec); spec != "" {
		if err := Enable(spec); err != nil {
			panic(fmt.Sprintf("%s=%q: %v", EnvSpec, spec, err))
		}
	}
}

// Inject is the hot-path call at a failure point. If name is not enabled it
// returns nil at once (about a nanosecond when nothing is enabled). If it is
// enabled, Inject performs its action: it returns an error wrapping
// ErrInjected (and syscall.ENOSPC for enospc), sleeps and returns nil,
// panics, or kills the process and never returns. It is safe for concurrent
// use; the count and probability of a point are shared by all callers.
func Inject(name string) error {
	t := active.Load()
	if t == nil {
		return nil
	}
	return t.inject(name)
}

func (t *table) inject(name string) error {
	p := t.points[name]
	if p == nil || p.act == actOff || p.act == actImage {
		return nil
	}
	if p.prob > 0 {
		t.rndMu.Lock()
		hit := t.rnd.Float64()*100 < p.prob
		t.rndMu.Unlock()
		if !hit {
			return nil
		}
	}
	if n := p.fired.Add(1); p.limit > 0 && n > p.limit {
		return nil
	}
	switch p.act {
	case actPanic:
		appendLog(name)
		panic(fmt.Errorf("failpoint: %q: panic: %w", name, ErrInjected))
	case actKill:
		appendLog(name)
		kill()
	case actError:
		return fmt.Errorf("failpoint: %q: %w", name, ErrInjected)
	case actENOSPC:
		return fmt.Errorf("failpoint: %q: %w: %w", name, ErrInjected, syscall.ENOSPC)
	case actSleep:
		time.Sleep(p.sleep)
	}
	return nil
}

// ImagePath is the call at a failure point whose caller can write an image
// of its durable state (see the image action in the package
// documentation). It returns the action's path and true when name is
// enabled with an image action and its count and probability let it fire;
// otherwise "" and false, at the cost of a disabled Inject when nothing is
// enabled. The caller writes the image to path atomically (a temporary
// file renamed over path), so that a reader sees the last complete image.
func ImagePath(name string) (string, bool) {
	t := active.Load()
	if t == nil {
		return "", false
	}
	p := t.points[name]
	if p == nil || p.act != actImage {
		return "", false
	}
	if p.prob > 0 {
		t.rndMu.Lock()
		hit := t.rnd.Float64()*100 < p.prob
		t.rndMu.Unlock()
		if !hit {
			return "", false
		}
	}
	if n := p.fired.Add(1); p.limit > 0 && n > p.limit {
		return "", false
	}
	return p.image, true
}

// Enable parses spec and makes it the set of enabled points, replacing
// whatever was enabled (by the environment or an earlier Enable) and
// resetting every count. An empty spec disables all points. On error nothing
// changes. The probability draws use a randomly seeded generator; use
// EnableSeeded for a reproducible sequence. Safe for concurrent use with
// Inject.
func Enable(spec string) error {
	return EnableSeeded(spec, rand.Uint64())
}

// EnableSeeded is Enable with the generator for "P%" draws seeded by seed,
// so that a single goroutine hitting the points sees the same sequence of
// fire/no-fire decisions on every run.
func EnableSeeded(spec string, seed uint64) error {
	t, err := parse(spec)
	if err != nil {
		return err
	}
	if t == nil {
		active.Store(nil)
		return nil
	}
	t.rnd = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	active.Store(t)
	return nil
}

// Disable disables every point. Safe for concurrent use with Inject; a call
// already past its check may still perform its action.
func Disable() { active.Store(nil) }

// Spec returns the enabled points in canonical spec form, sorted by name,
// or "" if none is enabled.
func Spec() string {
	if t := active.Load(); t != nil {
		return t.spec
	}
	return ""
}

// Fired returns how many times the action of point name has fired since it
// was enabled (hits that a "P%" draw passed over or that came after an "N*"
// count was used up do not count), or 0 if it is not enabled.
func Fired(name string) int {
	t := active.Load()
	if t == nil {
		return 0
	}
	p := t.points[name]
	if p == nil {
		return 0
	}
	n := p.fired.Load()
	if p.limit > 0 && n > p.limit {
		n = p.limit
	}
	return int(n)
}

// Names returns the known point names, sorted.
func Names() []string {
	s := slices.Clone(known)
	sort.Strings(s)
	return s
}

// SetLogFile sets the file that panic, exit and kill actions append the
// point's name to (see the package documentation); "" turns the log off. It
// overrides CONTROLFEED_FAILPOINT_LOG and is safe for concurrent use.
func SetLogFile(path string) {
	logMu.Lock()
	defer logMu.Unlock()
	logPath = path
}

// appendLog appends "<name>\n" to the kill log, if any, and fsyncs it.
// Errors are ignored: the caller is about to end the process.
func appendLog(name string) {
	logMu.Lock()
	defer logMu.Unlock()
	if logPath == "" {
		return
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	f.WriteString(name + "\n")
	f.Sync()
	f.Close()
}

// parse turns a spec into a table; nil for an empty spec.
func parse(spec string) (*table, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	t := &table{points: map[string]*point{}}
	for _, raw := range strings.Split(spec, ",") {
		term := strings.TrimSpace(raw)
		p, err := parseTerm(term)
		if err != nil {
			return nil, err
		}
		if _, dup := t.points[p.name]; dup {
			return nil, fmt.Errorf("failpoint: enable %q: point %s is named twice", term, p.name)
		}
		t.points[p.name] = p
	}
	names := make([]string, 0, len(t.points))
	for n := range t.points {
		names = append(names, n)
	}
	sort.Strings(names)
	terms := make([]string, len(names))
	for i, n := range names {
		terms[i] = t.points[n].term
	}
	t.spec = strings.Join(terms, ",")
	return t, nil
}

func parseTerm(term string) (*point, error) {
	if term == "" {
		return nil, errors.New(`failpoint: enable: empty term (a stray ","?)`)
	}
	name, act, ok := strings.Cut(term, "=")
	if !ok {
		return nil, fmt.Errorf("failpoint: enable %q: want name=action", term)
	}
	name, act = strings.TrimSpace(name), strings.TrimSpace(act)
	if !slices.Contains(known, name) {
		return nil, fmt.Errorf("failpoint: enable %q: unknown point %q; known points: %s", term, name, strings.Join(Names(), ", "))
	}
	p := &point{name: name}
	var prefix strings.Builder
	if n, rest, ok := strings.Cut(act, "*"); ok {
		c, err := strconv.ParseInt(n, 10, 64)
		if err != nil || c < 1 {
			return nil, fmt.Errorf("failpoint: enable %q: count %q is not an integer >= 1", term, n)
		}
		p.limit, act = c, rest
		fmt.Fprintf(&prefix, "%d*", c)
	}
	if pct, rest, ok := strings.Cut(act, "%"); ok {
		f, err := strconv.ParseFloat(pct, 64)
		if err != nil || !(f > 0 && f <= 100) {
			return nil, fmt.Errorf("failpoint: enable %q: probability %q%% is not a number in (0, 100]", term, pct)
		}
		if f < 100 {
			p.prob = f
		}
		act = rest
		prefix.WriteString(strconv.FormatFloat(f, 'g', -1, 64) + "%")
	}
	switch act {
	case "off":
		p.act = actOff
	case "panic":
		p.act = actPanic
	case "exit", "kill":
		p.act = actKill
	case "error":
		p.act = actError
	case "enospc":
		p.act = actENOSPC
	default:
		if path, found := strings.CutPrefix(act, "image("); found {
			path, ok := strings.CutSuffix(path, ")")
			if !ok || path == "" || strings.ContainsAny(path, ",") {
				return nil, fmt.Errorf("failpoint: enable %q: image action %q wants a file path without commas, such as image(/tmp/p.img)", term, act)
			}
			p.act, p.image = actImage, path
			break
		}
		arg, found := strings.CutPrefix(act, "sleep(")
		if !found || !strings.HasSuffix(arg, ")") {
			return nil, fmt.Errorf("failpoint: enable %q: unknown action %q; want panic, exit, kill, error, enospc, sleep(<duration>), image(<path>) or off", term, act)
		}
		d, err := time.ParseDuration(strings.TrimSuffix(arg, ")"))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("failpoint: enable %q: sleep duration %q is not a non-negative duration such as 100ms", term, strings.TrimSuffix(arg, ")"))
		}
		p.act, p.sleep = actSleep, d
	}
	p.term = name + "=" + prefix.String() + act
	return p, nil
}
