package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is one service running as its own OS process.
type Process struct {
	name  string
	stack *Stack

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logf   *os.File
}

func (s *Stack) newProcess(name string) (*Process, error) {
	bin := filepath.Join(s.cfg.BinDir, name)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("service binary %s: %w (run make build)", bin, err)
	}
	return &Process{name: name, stack: s}, nil
}

// Start starts the service and waits until its /readyz answers 200.
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("%s already running", p.name)
	}
	cmd := exec.Command(filepath.Join(p.stack.cfg.BinDir, p.name))
	cmd.Env = p.stack.env(p.name)
	var out io.Writer = p.stack.cfg.Logs
	if out == nil {
		dir := filepath.Join(p.stack.cfg.DataDir, "logs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			p.mu.Unlock()
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		p.logf = f
		out = f
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so a terminal's Ctrl-C reaches only the launcher,
	// which stops the services in order; and a service dies with the
	// launcher if the launcher is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(rctx, p.stack.URL(p.name)+"/readyz", exited); err != nil {
		_ = p.Kill()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

// Stop sends SIGTERM and waits for a clean exit, killing the process after
// 20 seconds.
func (p *Process) Stop() error { return p.signal(syscall.SIGTERM, 20*time.Second) }

// Kill sends SIGKILL, as a crash would, and waits for the process to die.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL, 10*time.Second) }

func (p *Process) signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	cmd, exited, logf := p.cmd, p.exited, p.logf
	p.cmd, p.logf = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	defer func() {
		if logf != nil {
			logf.Close()
		}
	}()
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

// Pid is the process id of the running service; 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is up.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}
