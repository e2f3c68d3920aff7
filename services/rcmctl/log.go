package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/seqlog"
)

// logExport writes an account's compliance log as JSON lines, one entry a
// line in seq order, read straight from the compliance database (the
// service's find permission is all it needs).
func logExport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account", "", "the account whose log to export (required)")
	out := fs.String("out", "", "file to write (default: standard output)")
	gw := gatewayFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *account == "" {
		return errors.New("log export: --account is required")
	}
	// The checkpoint first: the export then holds at least what it covers,
	// so that the checkpoint can be checked against it.
	cp, err := gw.get(ctx, *account, "/v1/compliance-log/checkpoint")
	var covered int64
	switch {
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "log export: %s has no signed checkpoint yet; exporting the entries alone\n", *account)
	case err != nil:
		return fmt.Errorf("log export: read the checkpoint: %w", err)
	default:
		c, err := parseCheckpointText(cp)
		if err != nil {
			return fmt.Errorf("log export: the gateway's checkpoint: %w", err)
		}
		if c.Origin != "" && !strings.HasSuffix(c.Origin, "/"+*account) {
			return fmt.Errorf("log export: the checkpoint's origin %q is not of %s", c.Origin, *account)
		}
		covered = int64(c.Size)
	}
	cl, err := mongox.Connect(env(getenv, "RCM_MONGODB_URI", "mongodb://127.0.0.1:27017/"), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	defer cl.Disconnect(context.Background())
	db := cl.Database(env(getenv, "RCM_COMPLIANCE_DATABASE", "rcm_compliance"))
	log := seqlog.New(seqlog.Config{Docs: db.Collection(auditlog.EntriesCollection), Heads: db.Collection(auditlog.HeadsCollection), LinkField: auditlog.LinkField})
	head, err := log.Reach(ctx, *account)
	if err != nil {
		return err
	}
	if head < covered {
		// Exported anyway, with the checkpoint: verify shows what is missing.
		fmt.Fprintf(stderr, "log export: the database reaches seq %d, the checkpoint covers %d entries\n", head, covered)
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	for seq := int64(1); seq <= head; seq++ {
		var d auditlog.Doc
		found, err := log.Get(ctx, *account, seq, &d)
		if err != nil {
			return err
		}
		if !found {
			// Exported as it is: verify reports the gap.
			continue
		}
		e, err := d.Entry()
		if err != nil {
			return err
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if *out != "" {
		fmt.Fprintf(stdout, "exported %d entries of %s to %s\n", n, *account, *out)
	}
	if cp != nil {
		path := checkpointPath(*out, *account)
		if err := os.WriteFile(path, cp, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote its checkpoint (%d entries) to %s\n", covered, path)
	}
	return nil
}

// checkpointPath is where an export's checkpoint goes: <account>.checkpoint
// beside the JSONL (in the working directory when the JSONL went to
// standard output).
func checkpointPath(export, account string) string {
	dir := "."
	if export != "" {
		dir = filepath.Dir(export)
	}
	return filepath.Join(dir, account+".checkpoint")
}
