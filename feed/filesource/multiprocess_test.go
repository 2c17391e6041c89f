package filesource_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/feed/filesource"
)

const (
	childEnvDir = "FILESOURCE_TEST_CHILD_DIR"
	childEnvID  = "FILESOURCE_TEST_CHILD_ID"
	procs       = 4
	perProc     = 200
	sharedIDs   = 25 // EventIDs every process appends (retries across processes)
)

// TestMultiProcessAppend runs several OS processes (this test binary,
// re-executed in child mode) appending to one directory at once, some with
// EventIDs the others also append. Afterwards the directory holds
// ControlVersions 1..N with no gap and no duplicate, every EventID exactly
// once, and every process was told the same ControlVersion for a shared
// EventID.
func TestMultiProcessAppend(t *testing.T) {
	if dir := os.Getenv(childEnvDir); dir != "" {
		multiProcessChild(t, dir, os.Getenv(childEnvID))
		return
	}
	dir := t.TempDir()
	outs := make([][]byte, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for p := range procs {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMultiProcessAppend$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvID+"="+strconv.Itoa(p))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			outs[p], errs[p] = cmd.Output()
			if errs[p] != nil {
				errs[p] = fmt.Errorf("child %d: %w\n%s\n%s", p, errs[p], outs[p], stderr.String())
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	told := map[string]uint64{} // EventID -> ControlVersion Append returned
	for p, out := range outs {
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			id, cvText, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "APPENDED "), " ")
			if !ok || !strings.HasPrefix(sc.Text(), "APPENDED ") {
				continue
			}
			cv, err := strconv.ParseUint(cvText, 10, 64)
			if err != nil {
				t.Fatalf("child %d printed %q", p, sc.Text())
			}
			if prev, seen := told[id]; seen && prev != cv {
				t.Fatalf("EventID %q was given ControlVersion %d and %d", id, prev, cv)
			}
			told[id] = cv
			n++
		}
		if n != perProc {
			t.Fatalf("child %d reported %d appends, want %d", p, n, perProc)
		}
	}
	wantN := procs*(perProc-sharedIDs) + sharedIDs
	if len(told) != wantN {
		t.Fatalf("%d distinct EventIDs appended, want %d", len(told), wantN)
	}

	src, err := filesource.NewSource(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var cursor uint64
	seen := map[string]bool{}
	for {
		batch, err := src.Poll(t.Context(), cursor)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			if e.ControlVersion != cursor+1 {
				t.Fatalf("ControlVersion %d follows %d: a gap or a duplicate", e.ControlVersion, cursor)
			}
			cursor = e.ControlVersion
			if seen[e.EventID] {
				t.Fatalf("EventID %q is in the feed twice", e.EventID)
			}
			seen[e.EventID] = true
			if told[e.EventID] != e.ControlVersion {
				t.Fatalf("feed has %q at %d, Append returned %d", e.EventID, e.ControlVersion, told[e.EventID])
			}
		}
	}
	if cursor != uint64(wantN) || len(seen) != wantN {
		t.Fatalf("feed holds %d events ending at %d, want 1..%d", len(seen), cursor, wantN)
	}
}

func multiProcessChild(t *testing.T, dir, id string) {
	sink, err := filesource.NewSink(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for i := range perProc {
		eid := fmt.Sprintf("proc%s-%d", id, i)
		if i < sharedIDs {
			eid = fmt.Sprintf("shared-%d", i)
		}
		out, err := sink.Append(t.Context(), newEvent(eid))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("APPENDED %s %d\n", eid, out.ControlVersion)
	}
}
