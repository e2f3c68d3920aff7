package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"

	"github.com/rcm-platform/rcm/api"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema names of the api module's schemas/ folder.
const (
	SchemaDocument = "document.v1.json"
	SchemaCampaign = "campaign.v1.json"
	SchemaConsent  = "consent.v1.json"
)

var (
	compileOnce sync.Once
	compiled    map[string]*jsonschema.Schema
	compileErr  error
)

func schemas() (map[string]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		files, err := fs.Glob(api.Files, "schemas/*.json")
		if err != nil {
			compileErr = err
			return
		}
		for _, f := range files {
			raw, err := fs.ReadFile(api.Files, f)
			if err != nil {
				compileErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", f, err)
				return
			}
			if err := c.AddResource(api.SchemaBaseURI+path.Base(f), doc); err != nil {
				compileErr = fmt.Errorf("schema %s: %w", f, err)
				return
			}
		}
		compiled = make(map[string]*jsonschema.Schema, len(files))
		for _, f := range files {
			s, err := c.Compile(api.SchemaBaseURI + path.Base(f))
			if err != nil {
				compileErr = fmt.Errorf("compile %s: %w", f, err)
				return
			}
			compiled[path.Base(f)] = s
		}
	})
	return compiled, compileErr
}

// Validate checks the JSON document raw against the named schema
// (e.g. SchemaDocument). A violation wraps ErrMalformed.
func Validate(schema string, raw []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%w: not JSON: %v", ErrMalformed, err)
	}
	return validateValue(schema, v)
}

// validateValue checks v, a JSON document as jsonschema.UnmarshalJSON
// gives it, against the named schema.
func validateValue(schema string, v any) error {
	all, err := schemas()
	if err != nil {
		return err
	}
	s, ok := all[schema]
	if !ok {
		return fmt.Errorf("no schema %q", schema)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, schema, err)
	}
	return nil
}

// ValidateData checks an event's JSON data against the schema its eventType
// names.
//
// The data is parsed once, for both: its type is read from the parsed
// object when that is plain (an object whose only key that matches
// eventType case-insensitively is eventType itself, a string). Anything
// else takes the way of a struct decode, as every consumer decodes the
// event (json.Unmarshal: keys matched case-insensitively, the last one
// winning), so that what is an unknown type and what is malformed, and
// the reason given, do not depend on the shortcut.
func ValidateData(raw []byte) error {
	if v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw)); err == nil {
		if t, ok := plainType(v); ok {
			if !Known(t) {
				return fmt.Errorf("%w %q", ErrUnknownType, t)
			}
			return validateValue(t+".v1.json", v)
		}
	}
	var head struct {
		EventType string `json:"eventType"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("%w: not a JSON object: %v", ErrMalformed, err)
	}
	if !Known(head.EventType) {
		return fmt.Errorf("%w %q", ErrUnknownType, head.EventType)
	}
	return Validate(head.EventType+".v1.json", raw)
}

// plainType returns the eventType of v if v is an object whose only key
// equal to "eventType" under Unicode case folding (a superset of the
// folding json.Unmarshal matches keys with) is "eventType", and its value
// a string.
func plainType(v any) (string, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return "", false
	}
	for k := range obj {
		if k != "eventType" && strings.EqualFold(k, "eventType") {
			return "", false
		}
	}
	t, ok := obj["eventType"].(string)
	return t, ok
}
