package filesource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watchMask selects every way a name can appear, change or go: a new name
// (IN_CREATE: also link(2) and symlink(2), which raise nothing else), a
// completed write, a rename in or out, a metadata change (IN_ATTRIB: chmod,
// which can make an unreadable file readable), a deletion, and the directory
// itself going away.
const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watcher reports names changed in one directory, through inotify.
//
// drain reads the non-blocking descriptor directly (callers serialize it with
// the index); wait blocks on the same descriptor through the runtime poller,
// so Close from another goroutine wakes it.
type watcher struct {
	mu     sync.Mutex // guards fd against close during drain
	fd     int
	f      *os.File // the same descriptor, for waiting; owns it
	buf    []byte
	gone   bool
	closed bool
}

func newWatcher(dir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	return &watcher{fd: fd, f: os.NewFile(uintptr(fd), "inotify:"+dir), buf: make([]byte, 64<<10)}, nil
}

func (w *watcher) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.f.Close()
}

var errDirGone = errors.New("the directory was removed or moved away")

// drain returns the names of ".json" files and of the prune marker changed
// since the last drain (possibly with repeats), or overflow if the kernel
// dropped events.
func (w *watcher) drain() (names []string, overflow bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, false, os.ErrClosed
	}
	for {
		n, err := unix.Read(w.fd, w.buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("read inotify events: %w", err)
		}
		if n <= 0 {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			nameLen := int(ev.Len)
			start := off + unix.SizeofInotifyEvent
			off = start + nameLen
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				overflow = true
			}
			if ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
				w.gone = true
			}
			if nameLen == 0 || off > n {
				continue
			}
			raw := w.buf[start:off]
			for len(raw) > 0 && raw[len(raw)-1] == 0 {
				raw = raw[:len(raw)-1]
			}
			if name := string(raw); isEventName(name) || name == markerName {
				names = append(names, name)
			}
		}
	}
	if w.gone {
		return nil, false, errDirGone
	}
	return names, overflow, nil
}

// wait blocks until the descriptor has events to read (possibly already read
// by a drain: a spurious return is allowed), ctx is done, or the watcher is
// closed.
func (w *watcher) wait(ctx context.Context) error {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		w.f.SetReadDeadline(time.Unix(1, 0))
	})
	first := true
	err = rc.Read(func(uintptr) bool {
		if first {
			first = false
			return false // wait for readability once
		}
		return true
	})
	if !stop() {
		<-fired
		w.f.SetReadDeadline(time.Time{})
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}
