package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	_ "time/tzdata" // the same time-zone database as the services

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

type documentValue struct {
	ID        string    `json:"id"`
	AccountID string    `json:"accountId"`
	Loan      *loan     `json:"loan"`
	Version   int64     `json:"version"`
	Borrower  *borrower `json:"borrower,omitempty"`
}

type loan struct {
	Status string `json:"status"`
}

type borrower struct {
	TimeZone string `json:"timeZone,omitempty"`
	State    string `json:"state,omitempty"`
}

// newBorrower returns the borrower of --tz and --state, nil when neither
// is given. A time zone the database does not know is sent as given (the
// contact rules then keep hours in every US zone), with a warning on
// stderr, since it is most likely a typo.
func newBorrower(tz, state string, stderr io.Writer) (*borrower, error) {
	tz, state = strings.TrimSpace(tz), strings.ToUpper(strings.TrimSpace(state))
	if tz == "" && state == "" {
		return nil, nil
	}
	if state != "" && (len(state) != 2 || strings.Trim(state, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "") {
		return nil, fmt.Errorf("documents put: --state %q is not a two-letter state code", state)
	}
	if tz != "" {
		if _, err := time.LoadLocation(tz); err != nil {
			fmt.Fprintf(stderr, "warning: time zone %q is not in the time-zone database; contact hours will have to hold in every US zone\n", tz)
		}
	}
	return &borrower{TimeZone: tz, State: state}, nil
}

func documentsPut(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("documents put", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "document id (required)")
	account := fs.String("account", "", "owning account (required)")
	status := fs.String("loan", "", "BEHIND, CURRENT, none (no loan), or another status (required)")
	version := fs.Int64("version", 0, "document version (default: the current time in milliseconds)")
	tz := fs.String("tz", "", "the borrower's IANA time zone, e.g. America/Chicago (default: none)")
	state := fs.String("state", "", "the borrower's two-letter state, e.g. MA (default: none)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the campaign service")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" || *account == "" || *status == "" {
		return fmt.Errorf("documents put: --id, --account and --loan are required")
	}
	b, err := newBorrower(*tz, *state, stderr)
	if err != nil {
		return err
	}
	v := documentValue{ID: *id, AccountID: *account, Version: *version, Borrower: b}
	if v.Version == 0 {
		v.Version = time.Now().UnixMilli()
	}
	if *status != "none" {
		v.Loan = &loan{Status: *status}
	}
	value, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := publish(ctx, getenv, *timeout, &kgo.Record{Key: []byte(*id), Value: value}); err != nil {
		return err
	}
	var who string
	if b != nil {
		who = fmt.Sprintf(", borrower time zone %q state %q", b.TimeZone, b.State)
	}
	fmt.Fprintf(stdout, "document %s (account %s, loan %s%s, version %d) applied\n", *id, *account, *status, who, v.Version)
	return nil
}

func documentsDelete(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("documents delete", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "document id (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the campaign service")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("documents delete: --id is required")
	}
	if err := publish(ctx, getenv, *timeout, &kgo.Record{Key: []byte(*id)}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "document %s deleted\n", *id)
	return nil
}

// publish produces r to the documents topic and waits until the campaign
// service's consumer group has committed past it, that is, applied it.
func publish(ctx context.Context, getenv func(string) string, timeout time.Duration, r *kgo.Record) error {
	r.Topic = env(getenv, "RCM_DOCUMENTS_TOPIC", "documents.v1")
	conn, err := kafkax.ConnFromEnv(getenv)
	if err != nil {
		return err
	}
	cl, err := kafkax.NewClient(conn, "rcmctl",
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := kafkax.ProduceAwaitGroup(ctx, cl, env(getenv, "RCM_DOCUMENTS_GROUP", "rcm-campaign"), r); err != nil {
		return fmt.Errorf("publish document %s: %w (is the stack running? make run)", r.Key, err)
	}
	return nil
}
