package httpx

import (
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/api"
	"go.yaml.in/yaml/v3"
)

// TestErrorsAreOpenAPIs: each error of the contract answers with a status
// under which openapi.yaml lists its message, and each message
// openapi.yaml lists is the message of one of these errors.
func TestErrorsAreOpenAPIs(t *testing.T) {
	t.Parallel()
	raw, err := fs.ReadFile(api.Files, "openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Responses map[string]struct {
				Content map[string]struct {
					Schema struct {
						AllOf []struct {
							Properties struct {
								Error struct {
									Const string   `yaml:"const"`
									Enum  []string `yaml:"enum"`
								} `yaml:"error"`
							} `yaml:"properties"`
						} `yaml:"allOf"`
					} `yaml:"schema"`
				} `yaml:"content"`
			} `yaml:"responses"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	// statuses[message] is every status whose response may carry it.
	statuses := map[string][]int{}
	for _, ops := range doc.Paths {
		for _, op := range ops {
			m, ok := op.(map[string]any)
			if !ok {
				continue // the path's parameters
			}
			for code, r := range m["responses"].(map[string]any) {
				ref, _ := r.(map[string]any)["$ref"].(string)
				name, ok := strings.CutPrefix(ref, "#/components/responses/")
				if !ok {
					continue
				}
				status, err := strconv.Atoi(code)
				if err != nil {
					t.Fatalf("response code %q", code)
				}
				for _, part := range doc.Components.Responses[name].Content["application/json"].Schema.AllOf {
					e := part.Properties.Error
					for _, msg := range append(e.Enum, e.Const) {
						if msg != "" && !slices.Contains(statuses[msg], status) {
							statuses[msg] = append(statuses[msg], status)
						}
					}
				}
			}
		}
	}
	if len(statuses) == 0 {
		t.Fatal("found no error messages in openapi.yaml")
	}
	contractErrs := []*Error{
		ErrMissingToken, ErrInvalidToken, ErrInvalidBody, ErrNoChannel, ErrLoanRule, ErrNotFound,
		ErrCampaignNotFound, ErrBodyTooLarge, ErrUnavailable, ErrInvalidQuery, ErrInvalidLastEventID,
		ErrIdempotencyKey, ErrTooManyRequests, ErrKeyReused, ErrKeyInProgress,
		ErrAllOptedOut, ErrNotPermitted, ErrOutcomeRecorded, ErrAttemptNotFound,
	}
	for _, e := range contractErrs {
		if got := statuses[e.Message]; len(got) != 1 || got[0] != e.Status {
			t.Errorf("%q: openapi.yaml lists it under %v, want only %d", e.Message, got, e.Status)
		}
		delete(statuses, e.Message)
	}
	for msg := range statuses {
		t.Errorf("openapi.yaml lists %q, no error of the contract has it", msg)
	}
}
