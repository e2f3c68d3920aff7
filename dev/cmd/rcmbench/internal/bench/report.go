package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is the figures of a run.
type Report struct {
	Started  time.Time
	Finished time.Time
	Config   Config
	Sections []*Section
}

// Section is one scenario's table and the notes that say what it measured.
type Section struct {
	Title  string
	Intro  string
	Header []string
	Rows   [][]string
	Notes  []string
}

func (s *Section) row(cells ...string) { s.Rows = append(s.Rows, cells) }

func (s *Section) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int
	CPU       string
	MemoryGiB float64
	Go        string
	OS        string
}

// ThisMachine reads the machine's description.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kib, err := procMeminfo("MemTotal:"); err == nil {
		m.MemoryGiB = float64(kib) / (1 << 20)
	}
	return m
}

func procMeminfo(field string) (int64, error) {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			var v int64
			_, err := fmt.Sscan(rest, &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", field)
}

// Markdown renders the report: what ran where and how, then each
// scenario's table and notes.
func (r *Report) Markdown(command string, m Machine) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `rcmbench` (`make bench`); every figure below comes from one run of it.\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", command)
	fmt.Fprintf(&b, "- Date: %s (run took %s)\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	cpu := m.CPU
	if cpu == "" {
		cpu = "unknown CPU"
	}
	fmt.Fprintf(&b, "- Machine: %d cores (`nproc`), %s, %.0f GiB RAM, %s, %s\n", m.CPUs, cpu, m.MemoryGiB, m.OS, m.Go)
	fmt.Fprintf(&b, "- Scenarios: %s\n\n", strings.Join(r.Config.Scenarios, ", "))
	b.WriteString("Everything runs on this one machine over loopback: the embedded Kafka broker (kfake) and the\n" +
		"embedded MongoDB-protocol store (FerretDB v1.24.0 on SQLite) inside the benchmark's own process,\n" +
		"the four services as separate processes built from this repository (`bin/`), and the load\n" +
		"generator. The store is a development server (see design.md, \"Known limits of the embedded\n" +
		"servers\"): the absolute figures are this machine's and this store's, the ratios are the point.\n" +
		"The benchmark starts a stack of its own on free ports with a temporary data dir, so it never\n" +
		"touches `make run`'s. The gateway's per-account rate limit is raised for the run\n" +
		"(`RCM_RATE_LIMIT=1000000` per `RCM_RATE_WINDOW=1m`) and the load is spread over many accounts,\n" +
		"so that neither the limit nor one account's lock is what gets measured.\n\n" +
		"Load: an in-repo closed-loop generator (`dev/cmd/rcmbench/internal/load`): N workers, each sending\n" +
		"its next request when the previous one answered, HTTP keep-alive, every latency kept and sorted\n" +
		"(exact nearest-rank percentiles). Steady-rate measurements use an open-loop pacer instead, so\n" +
		"that a slow answer does not hide the requests queued behind it. The start-campaign paths, the\n" +
		"clearance scenario, the pipeline/compliance/fan-out scenarios and the growth scenario each run\n" +
		"on a stack of their own, so that the work one leaves behind does not slow the next.\n")
	if r.Config.PprofDir != "" {
		b.WriteString("\n**CPU profiling was on during this run** (`-pprof`): it slows the embedded store, and the figures\n" +
			"are lower than without it.\n")
	}
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		if s.Intro != "" {
			b.WriteString(s.Intro + "\n\n")
		}
		writeTable(&b, s.Header, s.Rows)
		if len(s.Notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.Notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
		}
	}
	return b.String()
}

func writeTable(b *strings.Builder, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(widths) && len([]rune(c)) > widths[i] {
				widths[i] = len([]rune(c))
			}
		}
	}
	line := func(cells []string) {
		b.WriteString("|")
		for i := range header {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			fmt.Fprintf(b, " %s%s |", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for _, w := range widths {
		b.WriteString(strings.Repeat("-", w+2) + "|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
}

// Formatting of the figures.

func fmtRate(perSec float64) string {
	switch {
	case perSec >= 100:
		return fmt.Sprintf("%.0f/s", perSec)
	case perSec >= 10:
		return fmt.Sprintf("%.1f/s", perSec)
	default:
		return fmt.Sprintf("%.2f/s", perSec)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 ms"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtRatio(x float64) string {
	switch {
	case x == 0:
		return "–"
	case x >= 10:
		return fmt.Sprintf("%.0f×", x)
	case x >= 0.1:
		return fmt.Sprintf("%.2f×", x)
	default:
		return fmt.Sprintf("%.3f×", x)
	}
}

func fmtInt(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + fmtInt(-n)
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
