package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCommandNamesTheRunWithoutMachinePaths(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	got := command([]string{"-scenarios", "start", "-pprof=" + filepath.Join(wd, "prof"), "-out", "", "-bin", "/somewhere/else/bin"})
	want := `bin/rcmbench -scenarios start -pprof=prof -out "" -bin bin`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, out, err := parseFlags([]string{"-scenarios", "growth, start", "-duration", "5s", "-bin", "/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Scenarios) != 2 || cfg.Scenarios[0] != "growth" || cfg.Scenarios[1] != "start" {
		t.Fatalf("scenarios %q", cfg.Scenarios)
	}
	if cfg.Duration != 5*time.Second || cfg.BinDir != "/x" || out != "BENCHMARKS.md" {
		t.Fatalf("got %+v, out %q", cfg, out)
	}
	if _, _, err := parseFlags([]string{"-scenarios", "nope"}, io.Discard); err == nil {
		t.Fatal("an unknown scenario must fail")
	}
	if _, _, err := parseFlags([]string{"-subscribers", "10", "-subscriber-accounts", "20"}, io.Discard); err == nil {
		t.Fatal("fewer subscribers than accounts must fail")
	}
}
