package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one supervised OS process: started again promptly whenever it
// dies, unless held or finished.
type proc struct {
	name string
	argv []string
	env  func() []string // computed at every start
	logf string
	// once: a clean exit (status 0) ends supervision (the writer).
	once bool

	mu       sync.Mutex
	cmd      *exec.Cmd
	held     bool
	done     bool
	starts   int
	started  time.Time // the running process's start
	badExits int       // exits that were neither a kill nor a clean stop
	lastBad  string    // the last such exit
	exited   chan struct{}
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// signal sends sig if the process runs and reports whether it did.
func (p *proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return false
	}
	return p.cmd.Process.Signal(sig) == nil
}

// hold stops restarts (the process may still be running): once
// hold(true) returns, no new process starts until hold(false).
func (p *proc) hold(v bool) {
	p.mu.Lock()
	p.held = v
	p.mu.Unlock()
}

// killAndWait SIGKILLs the process and waits until it is gone.
func (p *proc) killAndWait() bool {
	p.mu.Lock()
	cmd, ch := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-ch
	return true
}

// supervise starts the process and restarts it after every death until ctx
// is done (then it SIGTERMs it and waits, SIGKILL after 10s).
func (p *proc) supervise(ctx context.Context, restartDelay time.Duration) {
	for ctx.Err() == nil {
		p.mu.Lock()
		held, done := p.held, p.done
		p.mu.Unlock()
		if done {
			return
		}
		if held {
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		env := p.env() // may take h.mu: not under p.mu
		f, err := os.OpenFile(p.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			p.recordBad(err.Error())
			sleepCtx(ctx, time.Second)
			continue
		}
		cmd := exec.Command(p.argv[0], p.argv[1:]...)
		dieWithHarness(cmd)
		cmd.Stdout, cmd.Stderr = f, f
		cmd.Env = env
		// The second held check and the start are one step under mu, so
		// once hold(true) returns no new process starts, and signal
		// reaches whichever runs (a stop that raced a restart used to stop
		// nothing and leave the new process running).
		p.mu.Lock()
		if p.held || p.done {
			p.mu.Unlock()
			f.Close()
			continue
		}
		if err := cmd.Start(); err != nil {
			p.mu.Unlock()
			f.Close()
			p.recordBad("start: " + err.Error())
			sleepCtx(ctx, time.Second)
			continue
		}
		ch := make(chan struct{})
		p.cmd, p.exited = cmd, ch
		p.starts++
		p.started = time.Now()
		p.mu.Unlock()
		waitErr := make(chan error, 1)
		go func() { waitErr <- cmd.Wait() }()
		var werr error
		select {
		case werr = <-waitErr:
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case werr = <-waitErr:
			case <-time.After(10 * time.Second):
				cmd.Process.Signal(syscall.SIGKILL)
				werr = <-waitErr
			}
		}
		f.Close()
		p.mu.Lock()
		p.cmd = nil
		close(ch)
		p.mu.Unlock()
		var ee *exec.ExitError
		switch {
		case werr == nil:
			if p.once {
				p.mu.Lock()
				p.done = true
				p.mu.Unlock()
				return
			}
		case errors.As(werr, &ee):
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGTERM) {
				break // our kill, a failpoint's kill, or the final stop
			}
			if ctx.Err() == nil {
				p.recordBad(werr.Error())
			}
		default:
			p.recordBad(werr.Error())
		}
		sleepCtx(ctx, restartDelay)
	}
}

func (p *proc) recordBad(s string) {
	p.mu.Lock()
	p.badExits++
	p.lastBad = s
	p.mu.Unlock()
}

func (p *proc) stats() (starts, bad int, last string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.badExits, p.lastBad
}

func (p *proc) finished() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// uptime is how long the running process has run (0 if none runs).
func (p *proc) uptime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return time.Since(p.started)
}

func (p *proc) String() string { return fmt.Sprintf("%s (%s)", p.name, p.logf) }

// stop holds the process and SIGSTOPs the one running, if any, and reports
// whether it is stopped (or none runs) within 2s: after it, the process
// can send nothing new until resume.
func (p *proc) stop() bool {
	p.hold(true)
	pid := p.pid()
	if pid == 0 {
		return true
	}
	p.signal(syscall.SIGSTOP)
	deadline := time.Now().Add(2 * time.Second)
	for !processStopped(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// resume SIGCONTs the process stop stopped and lets it be restarted again.
func (p *proc) resume() {
	p.signal(syscall.SIGCONT)
	p.hold(false)
}

// pid returns the running process's id, or 0.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// startCount returns how many times the process was started.
func (p *proc) startCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}
