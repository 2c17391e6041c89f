package failpoint_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// childEnv selects what the re-executed test binary does (see TestMain).
const childEnv = "FAILPOINT_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "inject":
		// The package's init has read CONTROLFEED_FAILPOINTS by now.
		err := failpoint.Inject(failpoint.KVAfterCommit)
		fmt.Printf("survived: %v\n", err)
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(3)
	}
}

func enable(t *testing.T, spec string) {
	t.Helper()
	if err := failpoint.Enable(spec); err != nil {
		t.Fatalf("Enable(%q): %v", spec, err)
	}
	t.Cleanup(failpoint.Disable)
}

func TestEnable_Spec(t *testing.T) {
	t.Cleanup(failpoint.Disable)
	for _, tc := range []struct{ spec, want string }{
		{"kv.after-commit=error", "kv.after-commit=error"},
		{" applier.before-commit = enospc , kv.after-commit=3*error ", "applier.before-commit=enospc,kv.after-commit=3*error"},
		{"filestore.mid-write=25%kill", "filestore.mid-write=25%kill"},
		{"filestore.mid-write=2*12.5%exit", "filestore.mid-write=2*12.5%exit"},
		{"outbox.before-publish=sleep(100ms)", "outbox.before-publish=sleep(100ms)"},
		{"outbox.before-publish=100%panic", "outbox.before-publish=100%panic"},
		{"applier.mid-batch=off", "applier.mid-batch=off"},
		{"", ""},
		{"  ", ""},
	} {
		if err := failpoint.Enable(tc.spec); err != nil {
			t.Errorf("Enable(%q): %v", tc.spec, err)
			continue
		}
		if got := failpoint.Spec(); got != tc.want {
			t.Errorf("Enable(%q): Spec() = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

func TestEnable_Errors(t *testing.T) {
	enable(t, "kv.after-commit=error")
	for _, tc := range []struct{ spec, want string }{
		{"nosuch.point=error", `unknown point "nosuch.point"; known points: applier.after-commit-before-ack, applier.before-commit, applier.mid-batch, filestore.mid-write, kv.after-artifact-before-commit, kv.after-commit, outbox.after-publish-before-writeback, outbox.after-sync, outbox.before-publish, snapshot.create-after-copy, snapshot.create-before-manifest, snapshot.create-mid-store, snapshot.publish-before-catalog, snapshot.restore-after-rename, snapshot.restore-before-rename, snapshot.restore-mid-write`},
		{"outbox.after-sync=image()", "image action"},
		{"outbox.after-sync=image(/tmp/x", "image action"},
		{"kv.after-commit", "want name=action"},
		{"kv.after-commit=explode", `unknown action "explode"`},
		{"kv.after-commit=0*error", `count "0" is not an integer >= 1`},
		{"kv.after-commit=x*error", `count "x"`},
		{"kv.after-commit=0%error", "probability"},
		{"kv.after-commit=101%error", "probability"},
		{"kv.after-commit=25%3*error", "count"},
		{"kv.after-commit=sleep(soon)", `sleep duration "soon"`},
		{"kv.after-commit=sleep(-1s)", "sleep duration"},
		{"kv.after-commit=sleep(1s", "unknown action"},
		{"kv.after-commit=error,kv.after-commit=panic", "named twice"},
		{"kv.after-commit=error,,applier.mid-batch=error", "empty term"},
	} {
		err := failpoint.Enable(tc.spec)
		if err == nil {
			t.Errorf("Enable(%q) succeeded", tc.spec)
			continue
		}
		if !strings.HasPrefix(err.Error(), "failpoint: enable") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Enable(%q) = %q, want it to start with %q and contain %q", tc.spec, err, "failpoint: enable", tc.want)
		}
	}
	if got := failpoint.Spec(); got != "kv.after-commit=error" {
		t.Fatalf("after failed Enables, Spec() = %q; a failed Enable must change nothing", got)
	}
}

func TestNames(t *testing.T) {
	names := failpoint.Names()
	if len(names) != 16 {
		t.Fatalf("Names() = %v, want the 16 points", names)
	}
	for _, n := range names {
		if err := failpoint.Enable(n + "=error"); err != nil {
			t.Errorf("Enable of listed name %s: %v", n, err)
		}
	}
	failpoint.Disable()
}

func TestInject_Disabled(t *testing.T) {
	failpoint.Disable()
	for _, n := range failpoint.Names() {
		if err := failpoint.Inject(n); err != nil {
			t.Errorf("Inject(%s) with nothing enabled = %v", n, err)
		}
	}
	if failpoint.Spec() != "" || failpoint.Fired(failpoint.KVAfterCommit) != 0 {
		t.Fatal("Spec/Fired report something while disabled")
	}
}

func TestInject_Error(t *testing.T) {
	enable(t, "kv.after-commit=error")
	err := failpoint.Inject(failpoint.KVAfterCommit)
	if !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("Inject = %v, want ErrInjected", err)
	}
	if errors.Is(err, syscall.ENOSPC) {
		t.Fatal("error action wraps ENOSPC")
	}
	if want := `failpoint: "kv.after-commit": injected failure`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if err := failpoint.Inject(failpoint.ApplierMidBatch); err != nil {
		t.Fatalf("a point not in the spec fired: %v", err)
	}
	if err := failpoint.Inject("not.a.point"); err != nil {
		t.Fatalf("an unknown name fired: %v", err)
	}
}

func TestInject_ENOSPC(t *testing.T) {
	enable(t, "applier.before-commit=enospc")
	err := failpoint.Inject(failpoint.ApplierBeforeCommit)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("Inject = %v, want ENOSPC and ErrInjected", err)
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("message %q does not say ENOSPC", err)
	}
}

func TestInject_Count(t *testing.T) {
	enable(t, "outbox.before-publish=3*error")
	var errs int
	for range 10 {
		if failpoint.Inject(failpoint.OutboxBeforePublish) != nil {
			errs++
		}
	}
	if errs != 3 {
		t.Fatalf("3*error fired %d times in 10 hits", errs)
	}
	if n := failpoint.Fired(failpoint.OutboxBeforePublish); n != 3 {
		t.Fatalf("Fired = %d, want 3", n)
	}
	// Enable resets the count.
	enable(t, "outbox.before-publish=1*error")
	if failpoint.Inject(failpoint.OutboxBeforePublish) == nil {
		t.Fatal("count not reset by Enable")
	}
}

func fires(t *testing.T, spec string, seed uint64, hits int) []bool {
	t.Helper()
	if err := failpoint.EnableSeeded(spec, seed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	out := make([]bool, hits)
	for i := range out {
		out[i] = failpoint.Inject(failpoint.FilestoreMidWrite) != nil
	}
	return out
}

func TestInject_Probability(t *testing.T) {
	const hits = 20000
	a := fires(t, "filestore.mid-write=25%error", 42, hits)
	n := 0
	for _, f := range a {
		if f {
			n++
		}
	}
	// Binomial(20000, 0.25): mean 5000, sd ~61; ±600 is ~10 sd.
	if n < 4400 || n > 5600 {
		t.Fatalf("25%% fired %d of %d hits", n, hits)
	}
	if got := failpoint.Fired(failpoint.FilestoreMidWrite); got != n {
		t.Fatalf("Fired = %d, counted %d", got, n)
	}
	b := fires(t, "filestore.mid-write=25%error", 42, hits)
	c := fires(t, "filestore.mid-write=25%error", 43, hits)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different fire sequence")
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatal("different seeds, same fire sequence")
	}
}

func TestInject_CountAndProbability(t *testing.T) {
	n := 0
	for _, f := range fires(t, "filestore.mid-write=5*50%error", 7, 1000) {
		if f {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("5*50%%error fired %d times in 1000 hits, want 5", n)
	}
}

func TestInject_Sleep(t *testing.T) {
	enable(t, "kv.after-commit=sleep(1ms)")
	if err := failpoint.Inject(failpoint.KVAfterCommit); err != nil {
		t.Fatalf("sleep returned %v", err)
	}
	if failpoint.Fired(failpoint.KVAfterCommit) != 1 {
		t.Fatal("sleep not counted")
	}
}

func TestInject_Off(t *testing.T) {
	enable(t, "kv.after-commit=off")
	if err := failpoint.Inject(failpoint.KVAfterCommit); err != nil || failpoint.Fired(failpoint.KVAfterCommit) != 0 {
		t.Fatalf("off fired: %v", err)
	}
}

func TestInject_Panic(t *testing.T) {
	log := filepath.Join(t.TempDir(), "kills.log")
	failpoint.SetLogFile(log)
	t.Cleanup(func() { failpoint.SetLogFile("") })
	enable(t, "applier.mid-batch=panic")
	v := func() (v any) {
		defer func() { v = recover() }()
		failpoint.Inject(failpoint.ApplierMidBatch)
		return nil
	}()
	err, ok := v.(error)
	if !ok || !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("panicked with %v, want an error wrapping ErrInjected", v)
	}
	b, rerr := os.ReadFile(log)
	if rerr != nil || string(b) != "applier.mid-batch\n" {
		t.Fatalf("log = %q, %v; want one line", b, rerr)
	}
}

func TestConcurrentEnableInject(t *testing.T) {
	t.Cleanup(failpoint.Disable)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := failpoint.Inject(failpoint.OutboxBeforePublish); err != nil && !errors.Is(err, failpoint.ErrInjected) {
					t.Error(err)
				}
			}
		}()
	}
	for i := range 200 {
		if i%2 == 0 {
			failpoint.Enable("outbox.before-publish=50%error")
		} else {
			failpoint.Disable()
		}
	}
	close(stop)
	wg.Wait()
}

// runChild re-executes the test binary with env added; it returns the exit
// state and output.
func runChild(t *testing.T, env ...string) (*os.ProcessState, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run child: %v", err)
	}
	return cmd.ProcessState, string(out)
}

func killedBySIGKILL(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func TestKill_FromEnvironment(t *testing.T) {
	log := filepath.Join(t.TempDir(), "kills.log")
	for i := range 2 {
		ps, out := runChild(t, childEnv+"=inject",
			failpoint.EnvSpec+"=kv.after-commit=kill", failpoint.EnvLog+"="+log)
		if !killedBySIGKILL(ps) {
			t.Fatalf("run %d: child exited with %v, output %q; want killed by SIGKILL", i, ps, out)
		}
		if strings.Contains(out, "survived") {
			t.Fatalf("run %d: Inject returned after kill: %q", i, out)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "kv.after-commit\nkv.after-commit\n"; got != want {
		t.Fatalf("kill log %q, want %q", got, want)
	}

	// exit is a synonym, and a point other than the enabled one lives on.
	ps, out := runChild(t, childEnv+"=inject", failpoint.EnvSpec+"=kv.after-commit=exit")
	if !killedBySIGKILL(ps) {
		t.Fatalf("exit: child exited with %v, output %q", ps, out)
	}
	ps, out = runChild(t, childEnv+"=inject", failpoint.EnvSpec+"=applier.mid-batch=exit")
	if ps.ExitCode() != 0 || !strings.Contains(out, "survived: <nil>") {
		t.Fatalf("other point: child exited with %v, output %q", ps, out)
	}
}

func TestEnvSpecInvalidPanicsAtInit(t *testing.T) {
	ps, out := runChild(t, childEnv+"=inject", failpoint.EnvSpec+"=kv.after-comit=exit")
	if ps.Success() || !strings.Contains(out, failpoint.EnvSpec) || !strings.Contains(out, `unknown point "kv.after-comit"`) {
		t.Fatalf("child exited with %v, output %q; want a panic naming the variable and the point", ps, out)
	}
}

func BenchmarkInjectDisabled(b *testing.B) {
	failpoint.Disable()
	for b.Loop() {
		if failpoint.Inject(failpoint.OutboxBeforePublish) != nil {
			b.Fatal("fired")
		}
	}
}

func BenchmarkInjectOtherPointEnabled(b *testing.B) {
	if err := failpoint.Enable("applier.mid-batch=error"); err != nil {
		b.Fatal(err)
	}
	defer failpoint.Disable()
	for b.Loop() {
		if failpoint.Inject(failpoint.OutboxBeforePublish) != nil {
			b.Fatal("fired")
		}
	}
}

// TestImagePath: an image action gives its path to ImagePath, counted like
// any action, and Inject ignores it.
func TestImagePath(t *testing.T) {
	enable(t, "outbox.after-sync=2*image(/tmp/p.img),kv.after-commit=error")
	if err := failpoint.Inject(failpoint.OutboxAfterSync); err != nil {
		t.Fatalf("Inject at an image point: %v, want nil", err)
	}
	for i := range 2 {
		if p, ok := failpoint.ImagePath(failpoint.OutboxAfterSync); !ok || p != "/tmp/p.img" {
			t.Fatalf("ImagePath #%d = %q, %v; want /tmp/p.img, true", i+1, p, ok)
		}
	}
	if p, ok := failpoint.ImagePath(failpoint.OutboxAfterSync); ok {
		t.Fatalf("ImagePath after its count = %q, true; want false", p)
	}
	if _, ok := failpoint.ImagePath(failpoint.KVAfterCommit); ok {
		t.Fatal("ImagePath of a point enabled with another action = true")
	}
}
