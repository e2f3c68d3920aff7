package stack

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects the launcher's log from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// binaries returns RCM_BIN_DIR when it holds the services (make test builds
// them), else builds them into a temporary directory.
func binaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("RCM_BIN_DIR"); dir != "" {
		ok := true
		for _, s := range binaryNames() {
			if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
				ok = false
			}
		}
		if ok {
			return dir
		}
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	for _, s := range binaryNames() {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, s), "./services/"+s)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", s, err, out)
		}
	}
	return dir
}

// binaryNames are the binaries a stack runs: the services and rcmctl (the witness).
func binaryNames() []string { return append(append([]string{}, Services...), "rcmctl") }

func poll(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSupervisorRestartsAKilledServiceAndStopsDuringBackoff starts a
// stack, SIGKILLs the feed service behind the launcher's back and sees the
// supervisor bring it back (a new pid, /readyz answering, the restart
// logged); then, with the gateway killed and waiting out a long backoff,
// sees Close return at once without restarting it.
func TestSupervisorRestartsAKilledServiceAndStopsDuringBackoff(t *testing.T) {
	logs := &lockedBuffer{}
	s, err := Start(t.Context(), Config{
		DataDir: t.TempDir(), BinDir: binaries(t), RandomPorts: true, Logs: logs, Partitions: 1,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		Restart: Restart{Min: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})

	feed := s.Process(Feed)
	before := feed.Pid()
	pid, err := s.Kill(Feed, syscall.SIGKILL)
	if err != nil || pid != before {
		t.Fatalf("Kill(feed) = %d, %v; want pid %d", pid, err, before)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := feed.WaitReady(ctx); err != nil {
		t.Fatalf("feed after SIGKILL: %v\n%s", err, logs)
	}
	if after := feed.Pid(); after == 0 || after == before {
		t.Fatalf("feed pid after the restart = %d, want a new one (was %d)", after, before)
	}
	if n := feed.Restarts(); n != 1 {
		t.Fatalf("feed restarts = %d, want 1", n)
	}
	for _, want := range []string{
		`msg="service exited; restarting" service=feed status="signal: killed" attempt=1 delay=100ms`,
		`msg="service restarted" service=feed`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("launcher log lacks %q:\n%s", want, logs)
		}
	}

	// A long backoff: Close must not wait it out, nor restart the service.
	s.mu.Lock()
	s.cfg.Restart = Restart{Min: time.Minute, Max: time.Minute}
	s.mu.Unlock()
	gw := s.Process(Gateway)
	if _, err := s.Kill(Gateway, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "gateway restart scheduled", func() error {
		if !strings.Contains(logs.String(), `service=gateway status="signal: killed" attempt=1 delay=1m0s`) {
			return fmt.Errorf("not logged yet")
		}
		return nil
	})
	if gw.Running() {
		t.Fatal("gateway running during its backoff")
	}
	began := time.Now()
	closed = true
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	took := time.Since(began)
	t.Logf("Close with the gateway in a 1m backoff took %v", took)
	if took > 15*time.Second {
		t.Fatalf("Close took %v with a service in backoff, want it prompt", took)
	}
	if n := gw.Restarts(); n != 0 || gw.Running() {
		t.Fatalf("gateway after Close: restarts %d, running %v; want 0, false", n, gw.Running())
	}
	if strings.Contains(logs.String(), `msg="service restarted" service=gateway`) {
		t.Fatalf("gateway restarted during shutdown:\n%s", logs)
	}
}
