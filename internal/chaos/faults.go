package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/internal/node"
)

// Connection stalls, a node name used twice, and broker disconnects during
// pipelined batches: the faults of the JetStream path that a kill does not
// show (see docs/RELIABILITY.md).

// stallRange is the length of one SIGSTOP..SIGCONT stall.
const (
	stallMin = 500 * time.Millisecond
	stallMax = 5 * time.Second
)

// stalls SIGSTOPs a process of the role for 0.5–5 s, then SIGCONTs it, n
// times spread over the fault phase. Broker stalls exclude broker restarts
// (brokerMu), pump stalls power losses and the hostile broker (pumpMu);
// node stalls skip a node in a duplicate-name window.
func (h *harness) stalls(ctx context.Context, done <-chan struct{}, role string, n int) {
	if n <= 0 {
		return
	}
	interval := h.cfg.Duration / time.Duration(n+1)
	for count := 0; count < n; {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(interval/2 + time.Duration(h.intn(int(interval)))):
		}
		d := stallMin + time.Duration(h.intn(int(stallMax-stallMin)))
		var p *proc
		node := -1
		switch role {
		case "broker":
			h.brokerMu.Lock()
			p = h.broker
		case "pump":
			// Not during a power loss or a dropped or swapped injection:
			// its SIGCONT would restart a pump they stopped (a pump that
			// published past the hostile broker's deletion put the events
			// it re-appends out of chain order, and the nodes stayed halted).
			h.pumpMu.Lock()
			p = h.pump
		default:
			node = h.intn(len(h.nodes))
			p = h.nodes[node]
		}
		h.mu.Lock()
		ok := h.protect[node] == 0 && p.signal(syscall.SIGSTOP)
		if ok && node >= 0 {
			h.stopped[node] = true
		}
		h.mu.Unlock()
		if ok {
			time.Sleep(d) // not cut short: the SIGCONT must follow
			p.signal(syscall.SIGCONT)
			count++
			h.mu.Lock()
			if node >= 0 {
				h.stopped[node] = false
			}
			h.rep.Stalls[role]++
			h.rep.StallTime += d
			h.mu.Unlock()
		}
		switch role {
		case "broker":
			h.brokerMu.Unlock()
		case "pump":
			h.pumpMu.Unlock()
		}
	}
}

// cuts resets the pump's connections to the broker (through the proxy) at
// random moments and shortly after every broker restart, when the outbox
// has a backlog and the pump publishes pipelined batches.
func (h *harness) cuts(ctx context.Context, done <-chan struct{}) {
	for {
		wait := time.Duration(500+h.intn(3000)) * time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-h.restarted:
			wait = time.Duration(200+h.intn(1300)) * time.Millisecond
		case <-time.After(wait):
			wait = 0
		}
		sleepCtx(ctx, wait)
		ps, _ := node.ReadStatus(ctx, h.producer())
		if n := h.proxy.Cut(); n > 0 {
			h.mu.Lock()
			h.rep.Cuts++
			if ps.OutboxPending >= cutBacklog {
				h.rep.CutsWithBacklog++
			}
			h.mu.Unlock()
		}
	}
}

// cutBacklog is the outbox backlog from which a cut counts as one during
// pipelined batches.
const cutBacklog = 10

// episodes runs n episodes spread over span: each waits a random time
// between half and all of span/(n+1), then calls run with the episode's
// number (1..n); a false result ends the series, as do ctx and done.
func (h *harness) episodes(ctx context.Context, done <-chan struct{}, n int, span time.Duration, run func(e int) bool) {
	if n <= 0 {
		return
	}
	interval := span / time.Duration(n+1)
	for e := 1; e <= n; e++ {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(interval/2 + time.Duration(h.intn(int(interval/2)))):
		}
		if !run(e) {
			return
		}
	}
}

// dupNames runs cfg.DupNames duplicate-name episodes spread over the fault
// phase.
func (h *harness) dupNames(ctx context.Context, done <-chan struct{}) {
	h.episodes(ctx, done, h.cfg.DupNames, h.cfg.Duration, func(e int) bool {
		h.dupEpisode(ctx, e)
		return true
	})
}

// statusOf reads /v1/status at addr.
func statusOf(addr string) (*node.Status, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st node.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

func inUse(st *node.Status) bool {
	return st != nil && st.Unavailable != nil && strings.Contains(st.Unavailable.Error, "in use")
}

// dupEpisode starts a second "controlfeed serve" with node k's name, its
// own database and HTTP address, while node k consumes. During a window in
// which node k's process runs throughout (the harness neither kills nor
// stalls it, and holds broker restarts and stalls) the duplicate must stand
// by: report "node name in use" and record no event. Then node k is killed
// and held down briefly (the duplicate may take the lease over: legitimate,
// it applies into its own database), restarted while the duplicate still
// runs, and the duplicate is killed.
func (h *harness) dupEpisode(ctx context.Context, e int) {
	// A node another episode holds (the disk-full wait, a wipe) is not
	// taken: the next one is.
	k := h.intn(len(h.nodes))
	for n := 0; !h.claimQuiet(k); n++ {
		if n == len(h.nodes) {
			return
		}
		k = (k + 1) % len(h.nodes)
	}
	p := h.nodes[k]
	defer func() {
		h.mu.Lock()
		h.protect[k]--
		h.quiet[k] = false
		h.mu.Unlock()
	}()
	// Node k restarts without failure points (claimQuiet), so that the
	// window is not void by its own death at one (it is killed at the end
	// of the episode and comes back with them).
	p.killAndWait()
	// Node k must run, not stalled, and consume: its last round applied or
	// halted (a node that is unavailable, for example still reconnecting
	// after a broker restart, may lose its lease to the duplicate
	// legitimately). Broker restarts and stalls wait from here on.
	h.brokerMu.Lock()
	locked := true
	defer func() {
		if locked {
			h.brokerMu.Unlock()
		}
	}()
	if !waitFor(ctx, 20*time.Second, func() bool {
		h.mu.Lock()
		stopped := h.stopped[k]
		h.mu.Unlock()
		if stopped || !p.running() {
			return false
		}
		st, err := statusOf(h.nodeHTTP[k])
		return err == nil && st.Unavailable == nil && st.Gap == nil && (st.State == "applying" || st.State == "halted")
	}) {
		h.logf("duplicate name %d: %s not ready; episode not run", e, p.name)
		return
	}
	addr, err := freeAddr()
	if err != nil {
		return
	}
	name := fmt.Sprintf("dup%d", e)
	argv := append([]string{}, p.argv...)
	for i := range argv {
		switch {
		case i > 0 && argv[i-1] == "--db":
			argv[i] = filepath.Join(h.dir, name+".db")
		case i > 0 && argv[i-1] == "--listen":
			argv[i] = addr
		}
	}
	logf, err := os.OpenFile(filepath.Join(h.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer logf.Close()

	pid0, starts0 := p.pid(), p.startCount()
	cmd := exec.Command(argv[0], argv[1:]...)
	dieWithHarness(cmd)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		h.logf("duplicate name %d: start: %v", e, err)
		return
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	window := 3*time.Second + time.Duration(h.intn(2000))*time.Millisecond
	end := time.Now().Add(window)
	standby := false
	var last *node.Status
	for time.Now().Before(end) {
		if st, err := statusOf(addr); err == nil {
			last = st
			standby = standby || inUse(st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, err := statusOf(addr); err == nil {
		last = st
	}
	valid := p.pid() == pid0 && p.startCount() == starts0 && pid0 != 0
	h.brokerMu.Unlock()
	locked = false

	h.mu.Lock()
	h.rep.DupNameEpisodes++
	switch {
	case !valid:
		h.rep.DupNameVoid++ // node k died at a failure point: a takeover would be legitimate
	case last == nil:
		h.rep.problem("duplicate name %d (%s): the duplicate's /v1/status never answered", e, p.name)
	default:
		got := last.Applied + last.Skipped
		h.rep.DupNameDeliveries += int(got)
		if got > 0 || last.Cursor > 0 {
			h.rep.problem("duplicate name %d (%s): the duplicate recorded %d events (cursor %d) while %s held the name", e, p.name, got, last.Cursor, p.name)
		}
		if standby {
			h.rep.DupNameStandby++
		} else {
			h.rep.problem("duplicate name %d (%s): the duplicate never reported the node name in use (last state %q)", e, p.name, last.State)
		}
	}
	h.mu.Unlock()

	// Kill node k and hold it down: the duplicate may take over.
	p.hold(true)
	p.killAndWait()
	time.Sleep(time.Duration(1500+h.intn(1500)) * time.Millisecond)
	took := false
	if st, err := statusOf(addr); err == nil && (st.Applied+st.Skipped > 0 || st.Cursor > 0) {
		took = true
	}
	h.mu.Lock()
	h.quiet[k] = false // back with its failure points
	h.mu.Unlock()
	p.hold(false)
	time.Sleep(time.Duration(1000+h.intn(1500)) * time.Millisecond) // node k restarts next to it
	sig := syscall.SIGKILL
	if e%2 == 0 {
		sig = syscall.SIGTERM
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	h.mu.Lock()
	if took {
		h.rep.DupNameTakeovers++
	}
	h.mu.Unlock()
	h.logf("duplicate name %d on %s: window %v valid %v, standby seen %v, took over after the kill %v", e, p.name, window.Round(100*time.Millisecond), valid, standby, took)
}

var haltLine = regexp.MustCompile(`msg="applier: (?:halted: event cannot be applied|still halted)[^"]*".* event_id=(\S+) control_version=(\d+)`)

// checkHalts reads every node's log for the halts the applier logged (at
// the first attempt and every retry) and counts those at an event the
// harness did not inject as a bad input: a halt for a transient cause.
func (h *harness) checkHalts() {
	r := h.rep
	for i := range h.nodes {
		f, err := os.Open(h.nodes[i].logf)
		if err != nil {
			r.problem("node%d: read the log for halts: %v", i+1, err)
			continue
		}
		seen := map[string]bool{}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m := haltLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			cv, _ := strconv.ParseUint(m[2], 10, 64)
			key := m[1] + "@" + m[2]
			if seen[key] {
				continue
			}
			seen[key] = true
			r.HaltsLogged++
			if !h.isInjected(m[1], cv) {
				r.HaltsWithoutBadInput++
				r.problem("node%d: halted at %s, which is no injected bad input (a halt for a transient cause?): %.300s", i+1, key, sc.Text())
			}
		}
		f.Close()
	}
}
