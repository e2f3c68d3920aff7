package bench

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestReadSSE(t *testing.T) {
	t.Parallel()
	stream := ": heartbeat\n\n" +
		"id: 1\nevent: campaign_started\ndata: {\"a\":1}\n\n" +
		"id: 2\r\ndata: first\r\ndata: second\r\n\r\n" +
		"data: " + strings.Repeat("x", 5000) + "\n\n" +
		"data: cut off"
	var got []string
	err := readSSE(strings.NewReader(stream), func(d []byte) { got = append(got, string(d)) })
	if err != io.EOF {
		t.Fatalf("got %v, want io.EOF at the end", err)
	}
	want := []string{`{"a":1}`, "first\nsecond", strings.Repeat("x", 5000)}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: got %.40q, want %.40q", i, got[i], want[i])
		}
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{fmtInt(0), "0"},
		{fmtInt(999), "999"},
		{fmtInt(1000), "1,000"},
		{fmtInt(1234567), "1,234,567"},
		{fmtInt(-12345), "-12,345"},
		{fmtRate(1234.4), "1234/s"},
		{fmtRate(25), "25.0/s"},
		{fmtRate(0.5), "0.50/s"},
		{fmtDur(1500 * time.Microsecond), "1.50 ms"},
		{fmtDur(250 * time.Millisecond), "250.0 ms"},
		{fmtDur(2500 * time.Millisecond), "2.50 s"},
		{fmtRatio(0.8234), "0.82×"},
		{fmtRatio(473.2), "473×"},
		{fmtRatio(0), "–"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestMarkdownTable(t *testing.T) {
	t.Parallel()
	r := &Report{Started: time.Unix(0, 0), Finished: time.Unix(60, 0), Config: DefaultConfig()}
	r.Sections = append(r.Sections, &Section{Title: "T", Header: []string{"a", "bb"}, Rows: [][]string{{"→x", "1"}}, Notes: []string{"n"}})
	md := r.Markdown("bin/rcmbench", Machine{CPUs: 2, Go: "go1.26", OS: "linux/amd64"})
	for _, want := range []string{"`bin/rcmbench`", "2 cores", "## T", "| a  | bb |", "|----|----|", "| →x | 1  |", "- n"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestAfternoonZoneIsInContactHoursAllDay(t *testing.T) {
	t.Parallel()
	day := time.Date(2026, 3, 8, 0, 30, 0, 0, time.UTC)
	for h := range 24 {
		now := day.Add(time.Duration(h) * time.Hour)
		zone := afternoonZone(now)
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatalf("%s: zone %q: %v", now, zone, err)
		}
		if got := now.In(loc).Hour(); got != 14 {
			t.Errorf("%s in %s is %02d:30 local, want 14:30", now.Format(time.Kitchen), zone, got)
		}
	}
}

func TestProcCPU(t *testing.T) {
	t.Parallel()
	// A command name with a space and a parenthesis, as /proc shows it.
	stat := "4242 (rcm (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 3 1 20 0 12 0 100 0 0\n"
	got, err := parseProcCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("got %v, want %v (utime 250 + stime 75 ticks of 10 ms)", got, want)
	}
	if _, err := parseProcCPU("4242 (cut"); err == nil {
		t.Fatal("a cut line parsed")
	}
}

func TestHasLabels(t *testing.T) {
	for _, c := range []struct {
		set, labels string
		want        bool
	}{
		{`{client_id="rcm-relay",request="Produce"}`, `request="Produce"`, true},
		{`{client_id="rcm-relay",request="Fetch"}`, `request="Produce"`, false},
		{`{client_id="rcm-relay",request="Produce"}`, `client_id="rcm-relay",request="Produce"`, true},
		{`{request="Produce"}`, `client_id="rcm-relay",request="Produce"`, false},
		{``, ``, true},
		{``, `outcome="ok"`, false},
		{`{outcome="ok"}`, ``, true},
	} {
		if got := hasLabels(c.set, c.labels); got != c.want {
			t.Errorf("hasLabels(%q, %q) = %v, want %v", c.set, c.labels, got, c.want)
		}
	}
}
