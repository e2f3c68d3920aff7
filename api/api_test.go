package api_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/api"
	"github.com/rcm-platform/rcm/api/apitest"
	"go.yaml.in/yaml/v3"
)

// TestOpenAPIIsValid loads openapi.yaml with its schema files and validates
// it as an OpenAPI 3.1 document.
func TestOpenAPIIsValid(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("got OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
}

// TestAsyncAPIRefsResolve checks that asyncapi.yaml is an AsyncAPI 3.0
// document whose every $ref points at something that exists.
func TestAsyncAPIRefsResolve(t *testing.T) {
	t.Parallel()
	raw, err := fs.ReadFile(api.Files, "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("got asyncapi %v, want 3.0.0", doc["asyncapi"])
	}
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if len(refs) == 0 {
		t.Fatal("found no $ref")
	}
	for _, ref := range refs {
		file, pointer, _ := strings.Cut(ref, "#")
		if file != "" {
			if _, err := fs.Stat(api.Files, path.Clean(file)); err != nil {
				t.Errorf("%s: %v", ref, err)
			}
			continue
		}
		var at any = doc
		for _, part := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
			m, ok := at.(map[string]any)
			if !ok {
				t.Errorf("%s: %q is not an object", ref, part)
				break
			}
			if at, ok = m[part]; !ok {
				t.Errorf("%s: no %q", ref, part)
				break
			}
		}
	}
}

// TestAsyncAPIListsEveryEvent: every event schema (one that extends
// event.v1.json) is the payload of a message on rcm.campaign-events.v1, and
// the consent topic's value is consent.v1.json, so that a type added to
// the schemas is described to consumers too.
func TestAsyncAPIListsEveryEvent(t *testing.T) {
	t.Parallel()
	raw, err := fs.ReadFile(api.Files, "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Channels map[string]struct {
			Address  string                       `yaml:"address"`
			Messages map[string]map[string]string `yaml:"messages"`
		} `yaml:"channels"`
		Components struct {
			Messages map[string]struct {
				Payload map[string]string `yaml:"payload"`
			} `yaml:"messages"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	payloads := map[string][]string{} // topic -> schema files
	for _, ch := range doc.Channels {
		for _, m := range ch.Messages {
			name := strings.TrimPrefix(m["$ref"], "#/components/messages/")
			payloads[ch.Address] = append(payloads[ch.Address], doc.Components.Messages[name].Payload["$ref"])
		}
	}
	files, err := fs.Glob(api.Files, "schemas/*.json")
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, f := range files {
		raw, err := fs.ReadFile(api.Files, f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"allOf": [{"$ref": "event.v1.json"}]`) {
			continue
		}
		events++
		if !slices.Contains(payloads["rcm.campaign-events.v1"], f) {
			t.Errorf("%s is an event schema, rcm.campaign-events.v1 has no message of it (it has %v)", f, payloads["rcm.campaign-events.v1"])
		}
	}
	if events < 7 {
		t.Errorf("found %d event schemas, want at least 7", events)
	}
	if got := payloads["rcm.consent.v1"]; !slices.Equal(got, []string{"schemas/consent.v1.json"}) {
		t.Errorf("rcm.consent.v1 messages have payloads %v, want schemas/consent.v1.json", got)
	}
}

// TestCampaignResponsesCarrySuppressedChannels: the campaign service sends
// suppressedChannels on every campaign it answers with ([] when none), so
// a campaign response without it does not match the description.
func TestCampaignResponsesCarrySuppressedChannels(t *testing.T) {
	t.Parallel()
	doc, err := apitest.LoadOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["Campaign"].Value
	record := func(extra string) any {
		var v any
		raw := `{"id": "rcm_01m8t0000000000000000000aa", "documentId": "doc_1", "sms": true, "email": false, "call": false,
			"tone": "kind", "cadence": "weekly", "active": true, "activeChannels": ["sms"], "optOuts": [],
			"createdBy": "user_1", "createdAt": "2026-05-01T12:00:00.000Z", "updatedAt": "2026-05-01T12:00:00.000Z"` + extra + `}`
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := schema.VisitJSON(record(`, "suppressedChannels": []`)); err != nil {
		t.Fatalf("a campaign with suppressedChannels: %v", err)
	}
	if err := schema.VisitJSON(record("")); err == nil {
		t.Fatal("a campaign without suppressedChannels matches, want it required")
	}
}
