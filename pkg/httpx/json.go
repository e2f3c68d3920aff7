package httpx

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"unicode/utf8"
)

// ReadJSONObject reads a request body that must be a JSON object sent as
// application/json. It returns the raw members for field-by-field
// validation. Any failure is ErrInvalidBody with a detail saying why, or
// ErrBodyTooLarge.
func ReadJSONObject(r *http.Request) (map[string]json.RawMessage, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, ErrInvalidBody.With("reason", "Content-Type must be application/json")
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		if IsBodyTooLarge(err) {
			return nil, ErrBodyTooLarge
		}
		return nil, ErrInvalidBody.Wrap(err).With("reason", "unreadable body")
	}
	if !utf8.Valid(raw) {
		return nil, ErrInvalidBody.With("reason", "body is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, ErrInvalidBody.With("reason", "body must be a JSON object")
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&members); err != nil {
		return nil, ErrInvalidBody.With("reason", "body is not valid JSON")
	}
	if dec.More() {
		return nil, ErrInvalidBody.With("reason", "body has data after the JSON object")
	}
	return members, nil
}
