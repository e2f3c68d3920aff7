package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWitnessCommandServes: rcmctl witness keeps its key in its state
// directory, serves its verifier key, cosigns over HTTP and counts it on
// /metrics, and stops on cancel.
func TestWitnessCommandServes(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	printed, _, err := runCmd(t, "witness", "--print-key", "--state-dir", state, "--name", "witness.test/w")
	if err != nil || !strings.HasPrefix(printed, "witness.test/w+") {
		t.Fatalf("--print-key: %v %q", err, printed)
	}
	es := testEntries(t, 2)
	signer, vkey := logSigner(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"witness", "--listen", addr, "--state-dir", state, "--log-key", vkey},
			func(string) string { return "" }, io.Discard, io.Discard)
	}()
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("witness exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness not ready: %v", err)
		}
	}
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("/verifier-key"); got != printed {
		t.Fatalf("served key %q, printed %q", got, printed)
	}
	resp, err := http.Post(base+"/add-checkpoint", "text/plain", bytes.NewReader(append([]byte("old 0\n\n"), signCheckpoint(t, signer, es, 2)...)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add-checkpoint: %d", resp.StatusCode)
	}
	if m := get("/metrics"); !strings.Contains(m, "rcm_witness_cosigned_total 1\n") || !strings.Contains(m, `rcm_witness_rejected_total{reason="inconsistent"} 0`) {
		t.Fatalf("metrics:\n%s", m)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("witness stopped with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("witness did not stop")
	}
}
