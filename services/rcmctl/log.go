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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *account == "" {
		return errors.New("log export: --account is required")
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
	return nil
}

// logVerify re-verifies an exported log offline, without the service or
// the database: every account's chain in the file, in file order.
func logVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("log verify: give the exported file")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	verifiers := map[string]*auditlog.Verifier{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e auditlog.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		v, ok := verifiers[e.AccountID]
		if !ok {
			v = auditlog.NewVerifier(e.AccountID)
			verifiers[e.AccountID] = v
			order = append(order, e.AccountID)
		}
		_ = v.Add(e)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	broken := 0
	enc := json.NewEncoder(stdout)
	for _, account := range order {
		res := verifiers[account].Result()
		if !res.OK {
			broken++
		}
		_ = enc.Encode(struct {
			AccountID string `json:"accountId"`
			auditlog.Result
		}{account, res})
	}
	if broken > 0 {
		return fmt.Errorf("log verify: %d of %d chains broken", broken, len(order))
	}
	return nil
}
