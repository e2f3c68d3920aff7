package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/pkg/httpx"
)

// parse runs a raw body through the same steps as the handler.
func parse[T any](t *testing.T, body, contentType string, fn func(map[string]json.RawMessage) (T, error)) (T, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	var zero T
	m, err := httpx.ReadJSONObject(r)
	if err != nil {
		return zero, err
	}
	return fn(m)
}

func TestParseStart(t *testing.T) {
	t.Parallel()
	const ok = `"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"`
	tests := []struct {
		name        string
		body        string
		contentType string
		want        error
		check       func(t *testing.T, c StartCommand)
	}{
		{name: "valid", body: `{` + ok + `}`, check: func(t *testing.T, c StartCommand) {
			if !c.SMS || c.Email || c.Call || c.Tone != "t" || c.Cadence != "c" || c.Notes != "" {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "spec example", body: `{"sms": true, "email": true, "call": false, "tone": "professional and empathetic", "cadence": "day 1, day 5, day 14", "notes": "Borrower previously responded well to SMS outreach."}`},
		{name: "content type with charset", body: `{` + ok + `}`, contentType: "application/json; charset=utf-8"},
		{name: "wrong content type", body: `{` + ok + `}`, contentType: "text/plain", want: httpx.ErrInvalidBody},
		{name: "no content type", body: `{` + ok + `}`, contentType: "-", want: httpx.ErrInvalidBody},
		{name: "json-ish content type", body: `{` + ok + `}`, contentType: "application/json-patch+json", want: httpx.ErrInvalidBody},
		{name: "unknown fields ignored", body: `{` + ok + `,"extra":{"a":[1,2]}}`},
		{name: "trims tone, cadence, notes", body: `{"sms":true,"email":false,"call":false,"tone":"  warm  ","cadence":"\tweekly\n","notes":"  hi  "}`, check: func(t *testing.T, c StartCommand) {
			if c.Tone != "warm" || c.Cadence != "weekly" || c.Notes != "hi" {
				t.Fatalf("got tone %q cadence %q notes %q, want trimmed", c.Tone, c.Cadence, c.Notes)
			}
		}},
		{name: "whitespace notes become absent", body: `{` + ok + `,"notes":"   "}`, check: func(t *testing.T, c StartCommand) {
			if c.Notes != "" {
				t.Fatalf("got notes %q, want absent", c.Notes)
			}
		}},
		{name: "null notes are absent", body: `{` + ok + `,"notes":null}`},
		{name: "tone 80 ascii", body: `{"sms":true,"email":false,"call":false,"tone":"` + strings.Repeat("a", 80) + `","cadence":"c"}`},
		{name: "tone 81 ascii", body: `{"sms":true,"email":false,"call":false,"tone":"` + strings.Repeat("a", 81) + `","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "tone 80 two-byte", body: `{"sms":true,"email":false,"call":false,"tone":"` + strings.Repeat("é", 80) + `","cadence":"c"}`},
		{name: "tone 81 two-byte", body: `{"sms":true,"email":false,"call":false,"tone":"` + strings.Repeat("é", 81) + `","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "cadence 80 four-byte", body: `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"` + strings.Repeat("😀", 80) + `"}`},
		{name: "cadence 81 four-byte", body: `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"` + strings.Repeat("😀", 81) + `"}`, want: httpx.ErrInvalidBody},
		{name: "cadence 80 escaped surrogate pairs", body: `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"` + strings.Repeat(`\ud83d\ude00`, 80) + `"}`},
		{name: "tone 80 after trimming 84", body: `{"sms":true,"email":false,"call":false,"tone":"  ` + strings.Repeat("a", 80) + `  ","cadence":"c"}`},
		{name: "notes 2000", body: `{` + ok + `,"notes":"` + strings.Repeat("n", 2000) + `"}`},
		{name: "notes 2001", body: `{` + ok + `,"notes":"` + strings.Repeat("n", 2001) + `"}`, want: httpx.ErrInvalidBody},
		{name: "notes 2000 three-byte", body: `{` + ok + `,"notes":"` + strings.Repeat("日", 2000) + `"}`},
		{name: "whitespace-only tone", body: `{"sms":true,"email":false,"call":false,"tone":"   ","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "empty cadence", body: `{"sms":true,"email":false,"call":false,"tone":"t","cadence":""}`, want: httpx.ErrInvalidBody},
		{name: "missing sms", body: `{"email":true,"call":false,"tone":"t","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "missing tone", body: `{"sms":true,"email":false,"call":false,"cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "null sms", body: `{"sms":null,"email":true,"call":false,"tone":"t","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "null tone", body: `{"sms":true,"email":false,"call":false,"tone":null,"cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "string boolean", body: `{"sms":"true","email":false,"call":false,"tone":"t","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "number boolean", body: `{"sms":1,"email":false,"call":false,"tone":"t","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "number tone", body: `{"sms":true,"email":false,"call":false,"tone":5,"cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "array notes", body: `{` + ok + `,"notes":["a"]}`, want: httpx.ErrInvalidBody},
		{name: "array body", body: `[{` + ok + `}]`, want: httpx.ErrInvalidBody},
		{name: "string body", body: `"hello"`, want: httpx.ErrInvalidBody},
		{name: "null body", body: `null`, want: httpx.ErrInvalidBody},
		{name: "empty body", body: ``, want: httpx.ErrInvalidBody},
		{name: "truncated json", body: `{"sms":true,`, want: httpx.ErrInvalidBody},
		{name: "two objects", body: `{` + ok + `}{}`, want: httpx.ErrInvalidBody},
		{name: "invalid utf-8 in tone", body: "{\"sms\":true,\"email\":false,\"call\":false,\"tone\":\"\xff\xfe\",\"cadence\":\"c\"}", want: httpx.ErrInvalidBody},
		{name: "invalid utf-8 in unknown field", body: "{" + ok + ",\"x\":\"\xc3\"}", want: httpx.ErrInvalidBody},
		{name: "lone high surrogate escape", body: `{"sms":true,"email":false,"call":false,"tone":"\ud83d","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "lone low surrogate escape", body: `{"sms":true,"email":false,"call":false,"tone":"a\ude00b","cadence":"c"}`, want: httpx.ErrInvalidBody},
		{name: "escaped backslash before u", body: `{"sms":true,"email":false,"call":false,"tone":"a\\ud83d","cadence":"c"}`, check: func(t *testing.T, c StartCommand) {
			if c.Tone != `a\ud83d` {
				t.Fatalf("got tone %q, want the literal text", c.Tone)
			}
		}},
		{name: "all channels false", body: `{"sms":false,"email":false,"call":false,"tone":"t","cadence":"c"}`, want: httpx.ErrNoChannel},
		{name: "body rule before channel rule", body: `{"sms":false,"email":false,"call":false,"tone":"","cadence":"c"}`, want: httpx.ErrInvalidBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct := tt.contentType
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			c, err := parse(t, tt.body, ct, ParseStart)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got err %v, want %v", err, tt.want)
			}
			if err == nil && tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestParseOptOut(t *testing.T) {
	t.Parallel()
	const id = "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0"
	tests := []struct {
		name  string
		body  string
		want  error
		check func(t *testing.T, c OptOutCommand)
	}{
		{name: "valid", body: `{"campaignId":"` + id + `","channel":"sms"}`},
		{name: "spec example", body: `{"campaignId":"` + id + `","channel":"sms","notes":"Borrower requested removal from SMS list on 2026-04-27."}`},
		{name: "all", body: `{"campaignId":"` + id + `","channel":"all"}`},
		{name: "email", body: `{"campaignId":"` + id + `","channel":"email"}`},
		{name: "call", body: `{"campaignId":"` + id + `","channel":"call"}`},
		{name: "trims notes", body: `{"campaignId":"` + id + `","channel":"call","notes":"  x  "}`, check: func(t *testing.T, c OptOutCommand) {
			if c.Notes != "x" {
				t.Fatalf("got notes %q, want x", c.Notes)
			}
		}},
		{name: "unknown channel", body: `{"campaignId":"` + id + `","channel":"fax"}`, want: httpx.ErrInvalidBody},
		{name: "uppercase channel", body: `{"campaignId":"` + id + `","channel":"SMS"}`, want: httpx.ErrInvalidBody},
		{name: "missing channel", body: `{"campaignId":"` + id + `"}`, want: httpx.ErrInvalidBody},
		{name: "missing campaignId", body: `{"channel":"sms"}`, want: httpx.ErrInvalidBody},
		{name: "empty campaignId", body: `{"campaignId":"  ","channel":"sms"}`, want: httpx.ErrInvalidBody},
		{name: "numeric campaignId", body: `{"campaignId":42,"channel":"sms"}`, want: httpx.ErrInvalidBody},
		{name: "null channel", body: `{"campaignId":"` + id + `","channel":null}`, want: httpx.ErrInvalidBody},
		{name: "notes 2001", body: `{"campaignId":"` + id + `","channel":"sms","notes":"` + strings.Repeat("n", 2001) + `"}`, want: httpx.ErrInvalidBody},
		{name: "notes object", body: `{"campaignId":"` + id + `","channel":"sms","notes":{}}`, want: httpx.ErrInvalidBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parse(t, tt.body, "application/json", ParseOptOut)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got err %v, want %v", err, tt.want)
			}
			if err == nil && tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// FuzzParseStart: no input panics, and every rejection is one of the
// contract's two body errors.
func FuzzParseStart(f *testing.F) {
	for _, s := range []string{
		`{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"}`,
		`{"sms":false,"email":false,"call":false,"tone":"t","cadence":"c","notes":"\ud83d\ude00"}`,
		`{"tone":"\ud83d"}`, `[]`, `null`, `{"sms":"true"}`, "{\"tone\":\"\xff\"}", `{"a":` + strings.Repeat("[", 100),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		_, err := parse(t, body, "application/json", ParseStart)
		if err != nil && !errors.Is(err, httpx.ErrInvalidBody) && !errors.Is(err, httpx.ErrNoChannel) {
			t.Fatalf("got %v, want a contract error", err)
		}
	})
}

// FuzzParseOptOut: no input panics, and every rejection is "Invalid body.".
func FuzzParseOptOut(f *testing.F) {
	for _, s := range []string{
		`{"campaignId":"rcm_01k0b2z9y8x7w6v5u4t3s2r1q0","channel":"sms"}`,
		`{"campaignId":"x","channel":"all","notes":null}`, `{}`, `{"channel":1}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		_, err := parse(t, body, "application/json", ParseOptOut)
		if err != nil && !errors.Is(err, httpx.ErrInvalidBody) {
			t.Fatalf("got %v, want a contract error", err)
		}
	})
}

// TestRulesNamed: the details of a refusal name the field and the rule in
// the words clients have seen, now that the rules are built from the
// contract's values.
func TestRulesNamed(t *testing.T) {
	t.Parallel()
	const opt = `"campaignId":"rcm_1"`
	for _, tc := range []struct {
		name, body, field, rule string
		optOut                  bool
	}{
		{"unknown channel", `{` + opt + `,"channel":"fax"}`, "channel", `must be one of "sms", "email", "call", "all"`, true},
		{"channel too long", `{` + opt + `,"channel":"telegram"}`, "channel", "must be 1 to 5 characters", true},
		{"campaign id too long", `{"campaignId":"` + strings.Repeat("r", 129) + `","channel":"sms"}`, "campaignId", "must be 1 to 128 characters", true},
		{"notes too long", `{` + opt + `,"channel":"sms","notes":"` + strings.Repeat("n", 2001) + `"}`, "notes", "must be 0 to 2000 characters", true},
		{"tone too long", `{"sms":true,"email":false,"call":false,"tone":"` + strings.Repeat("a", 81) + `","cadence":"c"}`, "tone", "must be 1 to 80 characters", false},
		{"cadence too long", `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"` + strings.Repeat("a", 81) + `"}`, "cadence", "must be 1 to 80 characters", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if tc.optOut {
				_, err = parse(t, tc.body, "application/json", ParseOptOut)
			} else {
				_, err = parse(t, tc.body, "application/json", ParseStart)
			}
			var he *httpx.Error
			if !errors.As(err, &he) || he.Message != "Invalid body." {
				t.Fatalf("got %v, want Invalid body.", err)
			}
			if he.Details["field"] != tc.field || he.Details["rule"] != tc.rule {
				t.Fatalf("got details %v, want field %q rule %q", he.Details, tc.field, tc.rule)
			}
		})
	}
}

func TestIdempotencyKeyRule(t *testing.T) {
	t.Parallel()
	for name, keys := range map[string][]string{
		"empty":     {""},
		"too long":  {strings.Repeat("k", 256)},
		"not ASCII": {"clé"},
		"repeated":  {"a", "b"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for _, k := range keys {
			r.Header.Add("Idempotency-Key", k)
		}
		var he *httpx.Error
		if err := checkIdempotencyKey(r); !errors.As(err, &he) || he.Message != "Invalid Idempotency-Key header." ||
			he.Details["reason"] != "one key of 1 to 255 visible ASCII characters" {
			t.Errorf("%s: got %v, want Invalid Idempotency-Key header. with its reason", name, err)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Idempotency-Key", strings.Repeat("k", 255))
	if err := checkIdempotencyKey(r); err != nil {
		t.Errorf("a key of 255 characters: got %v, want none", err)
	}
}
