package campaign

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
)

var (
	t0    = time.Date(2026, 4, 27, 10, 0, 0, 123456789, time.UTC)
	user  = events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"}
	doc   = Document{ID: "doc_1", AccountID: "org_1", Loan: &Loan{Status: "BEHIND"}, Version: 1}
	valid = StartInput{SMS: true, Email: true, Tone: "professional and empathetic", Cadence: "day 1, day 5, day 14"}
)

func seqIDs() func(string) string {
	n := 0
	return func(prefix string) string {
		n++
		return fmt.Sprintf("%s%026d", prefix, n)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      StartInput
		doc     Document
		wantErr error
		check   func(t *testing.T, c Campaign)
	}{
		{name: "sms and email", in: valid, doc: doc, check: func(t *testing.T, c Campaign) {
			if !slices.Equal(c.ActiveChannels, []Channel{SMS, Email}) {
				t.Fatalf("got active channels %v, want [sms email]", c.ActiveChannels)
			}
			if !c.Active || c.AccountID != "org_1" || c.CreatedBy != "user_1" {
				t.Fatalf("got %+v, want active, account org_1, created by user_1", c)
			}
			if !c.CreatedAt.Equal(t0.Truncate(time.Millisecond)) {
				t.Fatalf("got createdAt %v, want %v truncated to ms", c.CreatedAt, t0)
			}
		}},
		{name: "call only", in: StartInput{Call: true, Tone: "t", Cadence: "c"}, doc: doc, check: func(t *testing.T, c Campaign) {
			if !slices.Equal(c.ActiveChannels, []Channel{Call}) {
				t.Fatalf("got %v, want [call]", c.ActiveChannels)
			}
		}},
		{name: "trims and keeps notes", in: StartInput{SMS: true, Tone: "  t  ", Cadence: "\tc\n", Notes: "  hello  "}, doc: doc, check: func(t *testing.T, c Campaign) {
			if c.Tone != "t" || c.Cadence != "c" || c.Notes != "hello" {
				t.Fatalf("got tone %q cadence %q notes %q, want trimmed", c.Tone, c.Cadence, c.Notes)
			}
		}},
		{name: "whitespace notes become absent", in: StartInput{SMS: true, Tone: "t", Cadence: "c", Notes: "   "}, doc: doc, check: func(t *testing.T, c Campaign) {
			if c.Notes != "" {
				t.Fatalf("got notes %q, want empty", c.Notes)
			}
		}},
		{name: "80 multi-byte code points", in: StartInput{SMS: true, Tone: strings.Repeat("é", 80), Cadence: strings.Repeat("日", 80)}, doc: doc},
		{name: "81 code points tone", in: StartInput{SMS: true, Tone: strings.Repeat("é", 81), Cadence: "c"}, doc: doc, wantErr: ErrInvalid},
		{name: "81 code points cadence", in: StartInput{SMS: true, Tone: "t", Cadence: strings.Repeat("a", 81)}, doc: doc, wantErr: ErrInvalid},
		{name: "whitespace-only tone", in: StartInput{SMS: true, Tone: "   ", Cadence: "c"}, doc: doc, wantErr: ErrInvalid},
		{name: "notes 2000", in: StartInput{SMS: true, Tone: "t", Cadence: "c", Notes: strings.Repeat("n", 2000)}, doc: doc},
		{name: "notes 2001", in: StartInput{SMS: true, Tone: "t", Cadence: "c", Notes: strings.Repeat("n", 2001)}, doc: doc, wantErr: ErrInvalid},
		{name: "no channel", in: StartInput{Tone: "t", Cadence: "c"}, doc: doc, wantErr: ErrNoChannel},
		{name: "body error before channel rule", in: StartInput{Tone: "", Cadence: "c"}, doc: doc, wantErr: ErrInvalid},
		{name: "channel rule before loan rule", in: StartInput{Tone: "t", Cadence: "c"}, doc: Document{ID: "d", AccountID: "a"}, wantErr: ErrNoChannel},
		{name: "loan current", in: valid, doc: Document{ID: "d", AccountID: "a", Loan: &Loan{Status: "CURRENT"}}, wantErr: ErrLoanRule},
		{name: "no loan", in: valid, doc: Document{ID: "d", AccountID: "a"}, wantErr: ErrLoanRule},
		{name: "lowercase behind", in: valid, doc: Document{ID: "d", AccountID: "a", Loan: &Loan{Status: "behind"}}, wantErr: ErrLoanRule},
		{name: "deleted document", in: valid, doc: Document{ID: "d", AccountID: "a", Loan: &Loan{Status: "BEHIND"}, Deleted: true}, wantErr: ErrLoanRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, e, err := Start(tt.in, tt.doc, user, seqIDs(), t0)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if e.EventType != events.TypeCampaignStarted || e.CampaignID != c.ID || e.Campaign == nil || e.Campaign.ID != c.ID {
				t.Fatalf("got event %+v, want campaign_started of %s carrying the record", e, c.ID)
			}
			if e.Actor != user {
				t.Fatalf("got actor %+v, want %+v", e.Actor, user)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestOptOut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		start           StartInput
		before          []Channel
		ch              Channel
		wantErr         error
		wantActive      bool
		wantChannels    []Channel
		wantDeactivated bool
	}{
		{name: "one channel", start: valid, ch: SMS, wantActive: true, wantChannels: []Channel{Email}},
		{name: "channel not in campaign", start: valid, ch: Call, wantActive: true, wantChannels: []Channel{SMS, Email}},
		{name: "all", start: valid, ch: All, wantActive: false, wantChannels: nil, wantDeactivated: true},
		{name: "last channel deactivates", start: valid, before: []Channel{SMS}, ch: Email, wantActive: false, wantDeactivated: true},
		{name: "repeated on inactive", start: valid, before: []Channel{All}, ch: All, wantActive: false, wantDeactivated: false},
		{name: "repeated channel", start: valid, before: []Channel{SMS}, ch: SMS, wantActive: true, wantChannels: []Channel{Email}},
		{name: "unknown channel", start: valid, ch: "fax", wantErr: ErrInvalid},
		{name: "empty channel", start: valid, ch: "", wantErr: ErrInvalid},
		{name: "uppercase channel", start: valid, ch: "SMS", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			newID := seqIDs()
			c, _, err := Start(tt.start, doc, user, newID, t0)
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range tt.before {
				if _, err := c.OptOut(ch, "", user, newID("evt_"), t0); err != nil {
					t.Fatal(err)
				}
			}
			n := len(c.OptOuts)
			e, err := c.OptOut(tt.ch, "  asked by phone  ", user, newID("evt_"), t0.Add(time.Minute))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if len(c.OptOuts) != n {
					t.Fatalf("a rejected opt-out changed the campaign: %d opt-outs, want %d", len(c.OptOuts), n)
				}
				return
			}
			if c.Active != tt.wantActive || !slices.Equal(c.ActiveChannels, tt.wantChannels) {
				t.Fatalf("got active %v channels %v, want %v %v", c.Active, c.ActiveChannels, tt.wantActive, tt.wantChannels)
			}
			if len(c.OptOuts) != n+1 || c.OptOuts[n].Notes != "asked by phone" {
				t.Fatalf("got opt-outs %+v, want one more with trimmed notes", c.OptOuts)
			}
			if e.EventType != events.TypeOptOut || e.Channel != string(tt.ch) || *e.Deactivated != tt.wantDeactivated || *e.Active != tt.wantActive {
				t.Fatalf("got event %+v, want opt_out of %s deactivated=%v", e, tt.ch, tt.wantDeactivated)
			}
		})
	}
}

func TestEndIfLoanLeft(t *testing.T) {
	t.Parallel()
	current := "CURRENT"
	paid := "PAID_OFF"
	tests := []struct {
		name       string
		doc        Document
		inactive   bool
		wantEnded  bool
		wantReason string
		wantStatus *string
	}{
		{name: "still behind", doc: doc},
		{name: "current", doc: Document{ID: "doc_1", AccountID: "org_1", Loan: &Loan{Status: current}}, wantEnded: true, wantReason: events.ReasonLoanCurrent, wantStatus: &current},
		{name: "loan removed", doc: Document{ID: "doc_1", AccountID: "org_1"}, wantEnded: true, wantReason: events.ReasonLoanRemoved},
		{name: "deleted", doc: Document{ID: "doc_1", AccountID: "org_1", Loan: &Loan{Status: "BEHIND"}, Deleted: true}, wantEnded: true, wantReason: events.ReasonLoanRemoved},
		{name: "other status", doc: Document{ID: "doc_1", AccountID: "org_1", Loan: &Loan{Status: paid}}, wantEnded: true, wantReason: events.ReasonLoanStatusChanged, wantStatus: &paid},
		{name: "already inactive", doc: Document{ID: "doc_1", AccountID: "org_1"}, inactive: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _, err := Start(valid, doc, user, seqIDs(), t0)
			if err != nil {
				t.Fatal(err)
			}
			if tt.inactive {
				if _, err := c.OptOut(All, "", user, "evt_x", t0); err != nil {
					t.Fatal(err)
				}
			}
			before := c
			e, ended := c.EndIfLoanLeft(tt.doc, "evt_end", t0)
			if ended != tt.wantEnded {
				t.Fatalf("got ended %v, want %v", ended, tt.wantEnded)
			}
			if !ended {
				if c.UpdatedAt != before.UpdatedAt || c.Active != before.Active {
					t.Fatal("a campaign that did not end was changed")
				}
				return
			}
			if c.Active || c.EndReason != tt.wantReason || c.EndedAt.IsZero() {
				t.Fatalf("got %+v, want ended with %s", c, tt.wantReason)
			}
			if e.Reason != tt.wantReason || e.Actor != SystemActor {
				t.Fatalf("got event %+v, want reason %s by the system", e, tt.wantReason)
			}
			if (e.LoanStatus == nil) != (tt.wantStatus == nil) || (e.LoanStatus != nil && *e.LoanStatus != *tt.wantStatus) {
				t.Fatalf("got loan status %v, want %v", e.LoanStatus, tt.wantStatus)
			}
		})
	}
}

func TestEventsMatchTheirSchemas(t *testing.T) {
	t.Parallel()
	newID := ids.NewGenerator(time.Now).New
	c, started, err := Start(StartInput{SMS: true, Tone: "t", Cadence: "c", Notes: "n"}, doc, user, newID, t0)
	if err != nil {
		t.Fatal(err)
	}
	optedOut, err := c.OptOut(SMS, "", user, newID("evt_"), t0)
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _ := Start(valid, doc, user, newID, t0)
	ended, _ := c2.EndIfLoanLeft(Document{ID: "doc_1", AccountID: "org_1"}, newID("evt_"), t0)
	for _, e := range []events.Event{started, optedOut, ended} {
		m, err := events.NewMessage(e, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := events.ValidateData(m.Data); err != nil {
			t.Errorf("%s: %v\n%s", e.EventType, err, m.Data)
		}
	}
}

// TestConsentOfTheDocument: a start is fitted to its document's consent
// (refused when every channel it asks for is revoked), an opt-out revokes
// on the document, and a document-level revocation takes the channel out
// of the active ones without deactivating the campaign.
func TestConsentOfTheDocument(t *testing.T) {
	t.Parallel()
	revoked := func(chs ...string) events.Consent {
		c := events.NewConsent()
		for _, ch := range chs {
			if err := c.Set(ch, events.ConsentRevoked, events.SourceConsent, "evt_"+ch, t0); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	tests := []struct {
		name           string
		consent        events.Consent
		wantErr        error
		wantChannels   []Channel
		wantSuppressed []string
	}{
		{"nothing revoked", events.NewConsent(), nil, []Channel{SMS, Email}, nil},
		{"one revoked", revoked("sms"), nil, []Channel{Email}, []string{"sms"}},
		{"another channel revoked", revoked("call"), nil, []Channel{SMS, Email}, nil},
		{"every requested channel revoked", revoked("sms", "email"), ErrAllRevoked, nil, nil},
		{"all revoked", revoked("all"), ErrAllRevoked, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, e, err := Start(valid, doc, user, seqIDs(), t0)
			if err != nil {
				t.Fatal(err)
			}
			c, e, err = Admit(c, e, tt.consent)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			var suppressed []string
			for _, s := range c.Suppressed() {
				suppressed = append(suppressed, s.Channel)
				if s.EventID != "evt_"+s.Channel && s.EventID != "evt_all" {
					t.Fatalf("suppressed %+v, want the revocation's event", s)
				}
			}
			if !c.Active || !slices.Equal(c.ActiveChannels, tt.wantChannels) || !slices.Equal(suppressed, tt.wantSuppressed) {
				t.Fatalf("got active %v channels %v suppressed %v, want active %v %v", c.Active, c.ActiveChannels, suppressed, tt.wantChannels, tt.wantSuppressed)
			}
			if !slices.Equal(e.Campaign.ActiveChannels, channelNames(tt.wantChannels)) || len(e.Campaign.Suppressed) != len(tt.wantSuppressed) {
				t.Fatalf("the event carries %+v, want the admitted campaign", e.Campaign)
			}
		})
	}

	// An opt-out revokes on the document and carries the consent after it.
	c, _, err := Start(StartInput{SMS: true, Call: true, Tone: "t", Cadence: "c"}, doc, user, seqIDs(), t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.OptOut(SMS, "", user, "evt_opt", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Consent.Revoked("sms") || c.Consent.Version != 1 || e.Consent == nil || *e.Consent != c.Consent || !c.Active {
		t.Fatalf("after the opt-out: consent %+v event %+v active %v", c.Consent, e.Consent, c.Active)
	}
	// A revocation of the last channel on the document does not
	// deactivate; a grant back brings it back.
	if err := c.Consent.Set("call", events.ConsentRevoked, events.SourceConsent, "evt_c", t0); err != nil {
		t.Fatal(err)
	}
	c.Refresh()
	if !c.Active || len(c.ActiveChannels) != 0 {
		t.Fatalf("call revoked on the document: active %v channels %v, want active and none", c.Active, c.ActiveChannels)
	}
	if err := c.Consent.Set("all", events.ConsentGranted, events.SourceConsent, "evt_g", t0); err != nil {
		t.Fatal(err)
	}
	c.Refresh()
	if !slices.Equal(c.ActiveChannels, []Channel{Call}) {
		t.Fatalf("granted back: channels %v, want [call] (sms is opted out by the campaign itself)", c.ActiveChannels)
	}
}
