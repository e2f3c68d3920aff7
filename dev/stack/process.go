package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is one service running as its own OS process, supervised: once
// Start has seen it ready, an exit that Stop or Kill did not ask for (a
// crash, a SIGKILL from outside, Stack.Signal) starts it again after a
// backoff (see Restart), and the launcher logs each restart.
type Process struct {
	name  string
	bin   string   // the binary under BinDir: the service's name, or rcmctl for the witness
	args  []string // its arguments
	stack *Stack

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	stop     chan struct{} // closed by Stop and Kill: supervision ends
	stopping bool
	sup      sync.WaitGroup // the supervising goroutine
	restarts int
}

// Restart is the supervisor's backoff: the first restart waits Min, each
// further one twice the last, at most Max; a process that stayed up for
// StableAfter starts again from Min. Zero fields take the defaults (100 ms,
// 5 s, 30 s).
type Restart struct {
	Min, Max, StableAfter time.Duration
}

func (r Restart) withDefaults() Restart {
	if r.Min <= 0 {
		r.Min = 100 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 5 * time.Second
	}
	if r.Max < r.Min {
		r.Max = r.Min
	}
	if r.StableAfter <= 0 {
		r.StableAfter = 30 * time.Second
	}
	return r
}

func (s *Stack) newProcess(name string) (*Process, error) {
	return s.newCommand(name, name)
}

// newCommand is the process name running binary bin (under BinDir) with args.
func (s *Stack) newCommand(name, bin string, args ...string) (*Process, error) {
	path := filepath.Join(s.cfg.BinDir, bin)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("service binary %s: %w (run make build)", path, err)
	}
	return &Process{name: name, bin: bin, args: args, stack: s}, nil
}

// Start starts the service, waits until its /readyz answers 200 and from
// then on supervises it. A process that exits before it is ready is not
// restarted: Start returns the error.
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("%s already running", p.name)
	}
	p.stopping = false
	p.stop = make(chan struct{})
	exited, err := p.spawnLocked()
	p.mu.Unlock()
	if err != nil {
		return err
	}

	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(rctx, p.stack.URL(p.name)+"/readyz", exited); err != nil {
		_ = p.Kill()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.mu.Lock()
	stop := p.stop
	if p.stopping {
		p.mu.Unlock()
		return fmt.Errorf("%s stopped while starting", p.name)
	}
	cmd := p.cmd
	p.sup.Add(1)
	p.mu.Unlock()
	go p.supervise(stop, cmd, exited)
	return nil
}

// spawnLocked starts the binary; p.mu is held.
func (p *Process) spawnLocked() (chan struct{}, error) {
	cmd := exec.Command(filepath.Join(p.stack.cfg.BinDir, p.bin), p.args...)
	cmd.Env = p.stack.env(p.name)
	var out io.Writer = p.stack.cfg.Logs
	var logf *os.File
	if out == nil {
		dir := filepath.Join(p.stack.cfg.DataDir, "logs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		logf, out = f, f
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so a terminal's Ctrl-C reaches only the launcher,
	// which stops the services in order; and a service dies with the
	// launcher if the launcher is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		close(exited)
	}()
	return exited, nil
}

// supervise restarts the process each time it exits, until stop closes.
func (p *Process) supervise(stop <-chan struct{}, cmd *exec.Cmd, exited <-chan struct{}) {
	defer p.sup.Done()
	policy := p.stack.restartPolicy()
	delay := policy.Min
	attempt := 0
	upSince := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-exited:
		}
		policy = p.stack.restartPolicy()
		delay = min(max(delay, policy.Min), policy.Max)
		state := cmd.ProcessState // read after exited closed: Wait has set it
		if time.Since(upSince) >= policy.StableAfter {
			delay, attempt = policy.Min, 0
		}
		attempt++
		p.stack.logger.Warn("service exited; restarting",
			slog.String("service", p.name), slog.String("status", exitStatus(state)),
			slog.Int("attempt", attempt), slog.Duration("delay", delay))
		select {
		case <-stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, policy.Max)

		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		next, err := p.spawnLocked()
		if err == nil {
			p.restarts++
			cmd, exited = p.cmd, next
			upSince = time.Now()
			p.stack.logger.Info("service restarted", slog.String("service", p.name),
				slog.Int("pid", p.cmd.Process.Pid), slog.Int("attempt", attempt))
		}
		p.mu.Unlock()
		if err != nil {
			// exited stays closed: the next pass waits delay and tries again.
			p.stack.logger.Error("service restart failed", slog.String("service", p.name),
				slog.Int("attempt", attempt), slog.String("err", err.Error()))
		}
	}
}

// exitStatus says how a process ended: "exit status 1", "signal: killed".
func exitStatus(state *os.ProcessState) string {
	if state == nil {
		return "unknown"
	}
	return state.String()
}

// Stop ends supervision, sends SIGTERM and waits for a clean exit, killing
// the process after 20 seconds. A process waiting to be restarted is simply
// not restarted.
func (p *Process) Stop() error { return p.end(syscall.SIGTERM, 20*time.Second) }

// Kill ends supervision and sends SIGKILL, as a crash would, and waits for
// the process to die; it stays down until Start.
func (p *Process) Kill() error { return p.end(syscall.SIGKILL, 10*time.Second) }

// unsupervise ends supervision and waits for the supervisor to return: no
// restart begins after it.
func (p *Process) unsupervise() {
	p.mu.Lock()
	if !p.stopping && p.stop != nil {
		p.stopping = true
		close(p.stop)
	}
	p.mu.Unlock()
	p.sup.Wait()
}

func (p *Process) end(sig syscall.Signal, wait time.Duration) error {
	p.unsupervise()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}

	select {
	case <-exited:
		return nil // it had exited already; nothing to signal
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not stop within %s of %s; killed", p.name, wait, sig)
	}
	if sig == syscall.SIGTERM && cmd.ProcessState != nil && !cmd.ProcessState.Success() {
		return fmt.Errorf("%s exited with %s after SIGTERM", p.name, cmd.ProcessState)
	}
	return nil
}

// Signal sends sig to the running process without ending supervision: the
// supervisor restarts it once it exits, as it would after a crash. For
// SIGKILL it returns once the process is gone. It returns the pid it
// signalled.
func (p *Process) Signal(sig syscall.Signal) (int, error) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0, fmt.Errorf("%s is not running", p.name)
	}
	select {
	case <-exited:
		return 0, fmt.Errorf("%s is not running (waiting to be restarted)", p.name)
	default:
	}
	pid := cmd.Process.Pid
	if err := cmd.Process.Signal(sig); err != nil {
		return 0, fmt.Errorf("signal %s: %w", p.name, err)
	}
	if sig == syscall.SIGKILL {
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			return pid, fmt.Errorf("%s (pid %d) still alive 10s after SIGKILL", p.name, pid)
		}
	}
	return pid, nil
}

// WaitReady waits until the process runs and its /readyz answers 200, as
// after a restart by the supervisor.
func (p *Process) WaitReady(ctx context.Context) error {
	for {
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		p.mu.Unlock()
		if cmd == nil || p.isStopping() {
			return fmt.Errorf("%s is stopped", p.name)
		}
		select {
		case <-exited:
			// Waiting for the supervisor's restart.
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not restarted: %w", p.name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
			continue
		default:
		}
		err := waitReady(ctx, p.stack.URL(p.name)+"/readyz", exited)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// It exited before it was ready: wait for the next one.
		if !errors.Is(err, errExited) {
			return err
		}
	}
}

// Pid is the process id of the running service; 0 when it is not running
// (stopped, or waiting to be restarted).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

func (p *Process) isStopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// Restarts is how many times the supervisor has started the process again.
func (p *Process) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

// Running reports whether the process is up.
func (p *Process) Running() bool { return p.Pid() != 0 }
