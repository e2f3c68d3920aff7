// Command rcmctl is the operator's and developer's command line for the
// platform: it mints development session tokens and publishes documents
// to the local stack.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rcmctl:", err)
		}
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(2)
	}
}

const usage = `rcmctl: the RCM platform's command line

  rcmctl token --sub USER [--org ORG] [--sid SID] [--ttl DURATION] [--v1] [--azp ORIGIN]
      print a development session token the local gateway accepts
  rcmctl documents put --id ID --account ACCOUNT --loan BEHIND|CURRENT|none|STATUS [--version N]
                       [--tz America/Chicago] [--state MA]
      publish a document to documents.v1 and wait until the campaign service applied it;
      --tz and --state are the borrower's IANA time zone and two-letter state
  rcmctl documents delete --id ID
      publish a tombstone for the document and wait until it was applied
  rcmctl log export --account ACCOUNT [--out FILE] [--token TOKEN] [--gateway URL]
      read the account's latest signed checkpoint from the gateway, then write its
      compliance log as JSON lines, read from its database (at least up to the
      checkpoint's size), and the checkpoint beside it as ACCOUNT.checkpoint
  rcmctl log verify FILE [--key VKEY] [--checkpoint C]... [--witness WVKEY]...
      re-verify an exported log offline: its hash chains and Merkle trees, and each
      checkpoint (default: ACCOUNT.checkpoint beside FILE) signed by VKEY and matched
      or extended by the export; exit status 1 when anything fails
  rcmctl log proof --account ACCOUNT --seq N [--size S] [--token TOKEN] [--gateway URL]
      print the entry's receipt, a c2sp.org/tlog-proof: its leaf, inclusion proof
      and the signed checkpoint (of size S, default the latest)
  rcmctl log check-proof FILE --key VKEY [--witness WVKEY]...
      check a receipt alone, offline: the checkpoint signed by VKEY (and cosigned by each
      witness), the inclusion proof against its root, the entry in it; print the entry;
      exit status 1 when it does not check
  rcmctl witness --log-key KEY [--listen 127.0.0.1:8084] [--state-dir DIR] [--origin-prefix P] [--name N]
      run a C2SP tlog-witness of the compliance log: it cosigns each account's checkpoint
      (origin P/<account>, signed by KEY) only when consistent with the last it cosigned;
      its key and state live in DIR (default $RCM_DATA_DIR/witness)
  rcmctl witness --print-key [--state-dir DIR]
      print the witness's verifier key, generating its key on first use

Environment: RCM_DATA_DIR (default .data), RCM_KAFKA_BROKERS (127.0.0.1:9092),
RCM_CLERK_ISSUER (http://127.0.0.1:8090), RCM_DOCUMENTS_TOPIC (documents.v1),
RCM_DOCUMENTS_GROUP (rcm-campaign), RCM_MONGODB_URI (mongodb://127.0.0.1:27017/),
RCM_COMPLIANCE_DATABASE (rcm_compliance), RCM_GATEWAY_URL (http://127.0.0.1:8080),
RCM_TOKEN (a session token; on the local stack a development token is minted),
RCM_LOG_ORIGIN (rcm.local/compliance), RCM_LOG_PUBLIC_KEY (the witness's --log-key).
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "token":
		return tokenCmd(args[1:], getenv, stdout, stderr)
	case "documents":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return flag.ErrHelp
		}
		switch args[1] {
		case "put":
			return documentsPut(ctx, args[2:], getenv, stdout, stderr)
		case "delete":
			return documentsDelete(ctx, args[2:], getenv, stdout, stderr)
		}
	case "log":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return flag.ErrHelp
		}
		switch args[1] {
		case "export":
			return logExport(ctx, args[2:], getenv, stdout, stderr)
		case "proof":
			return logProof(ctx, args[2:], getenv, stdout, stderr)
		case "check-proof":
			return logCheckProof(args[2:], stdout, stderr)
		case "verify":
			err := logVerify(args[2:], stdout, stderr)
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				return exitError{code: 1, err: err}
			}
			return err
		}
	case "witness":
		return witnessCmd(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func env(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// exitError carries a specific exit status: 1 for "verified, and broken",
// as against 2 for "could not run".
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }
