package stack

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStackRunsAWitnessForTheComplianceLog: the stack starts rcmctl
// witness with the log's development public key before the services,
// keeps the witness's key and the log's signing key under the data dir,
// and gives the compliance service both (RCM_LOG_SIGNING_KEY,
// RCM_LOG_WITNESSES=<url>|<witness verifier key>).
func TestStackRunsAWitnessForTheComplianceLog(t *testing.T) {
	logs := &lockedBuffer{}
	dataDir := t.TempDir()
	s, err := Start(t.Context(), Config{
		DataDir: dataDir, BinDir: binaries(t), RandomPorts: true, Logs: logs, Partitions: 1,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	defer s.Close()

	vkey, err := os.ReadFile(filepath.Join(dataDir, WitnessStateDir, "witness.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL(Witness) + "/verifier-key")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(served) != string(vkey) || !strings.HasPrefix(string(vkey), "rcm.local/witness+") {
		t.Fatalf("witness serves %q, its state dir holds %q", served, vkey)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, LogSigningKeyPath)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log signing key: %v %v", fi, err)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.Process(Compliance).Pid()))
	if err != nil {
		t.Fatal(err)
	}
	env := "\x00" + string(environ)
	for _, want := range []string{
		"\x00RCM_LOG_WITNESSES=" + s.URL(Witness) + "|" + strings.TrimSpace(string(vkey)) + "\x00",
		"\x00RCM_LOG_SIGNING_KEY=" + filepath.Join(dataDir, LogSigningKeyPath) + "\x00",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("compliance's environment lacks %q", strings.Trim(want, "\x00"))
		}
	}
}
