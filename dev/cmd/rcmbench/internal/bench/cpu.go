package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// parseProcCPU returns the CPU time (user and system) a /proc/<pid>/stat
// line gives.
func parseProcCPU(stat string) (time.Duration, error) {
	// The command name is in parentheses and may hold anything: the
	// fields that follow start after its last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat line without a command name")
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is the state (field 3): utime and stime are 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat line of %d fields after the name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat field %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// cpuUse is the CPU time each process used over a stretch: the services
// by name, and this process (the embedded store and broker, and the load
// generator) as "rcmbench".
type cpuUse map[string]time.Duration

// plus returns u and o added (either may be nil).
func (u cpuUse) plus(o cpuUse) cpuUse {
	out := make(cpuUse, len(u))
	for k, v := range u {
		out[k] = v
	}
	for k, v := range o {
		out[k] += v
	}
	return out
}

// services is the CPU the services used, all of them.
func (u cpuUse) services() time.Duration {
	var t time.Duration
	for _, s := range stack.Services {
		t += u[s]
	}
	return t
}

// cpuNow reads the CPU time used so far by each service of the stack and
// by this process; a service not running is left out.
func (e *env) cpuNow() cpuUse {
	u := cpuUse{}
	for _, s := range stack.Services {
		pid := e.stk.Process(s).Pid()
		if pid == 0 {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if d, err := parseProcCPU(string(raw)); err == nil {
			u[s] = d
		}
	}
	if d, err := selfCPU(); err == nil {
		u["rcmbench"] = d
	}
	return u
}

// selfCPU is the CPU time (user and system) this process used so far.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpuSince is the CPU each process used from before to now; a process
// that was not running at both ends (or was started again) is left out.
func (e *env) cpuSince(before cpuUse) cpuUse {
	now := e.cpuNow()
	out := cpuUse{}
	for k, v := range before {
		if n, ok := now[k]; ok && n >= v {
			out[k] = n - v
		}
	}
	return out
}

// perOp formats the CPU each process used per operation of n, in
// milliseconds: the services one by one, their sum, and this process.
func (u cpuUse) perOp(n int) string {
	if n == 0 {
		return "–"
	}
	ms := func(d time.Duration) string {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(n)/float64(time.Millisecond))
	}
	var parts []string
	for _, s := range stack.Services {
		parts = append(parts, s+" "+ms(u[s]))
	}
	return fmt.Sprintf("%s; the services %s in all; this process (the embedded store and broker, and the load generator) %s",
		strings.Join(parts, ", "), ms(u.services()), ms(u["rcmbench"]))
}
