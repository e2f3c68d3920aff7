package obs

import "encoding/json"

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"status":"unavailable"}` + "\n")
	}
	return append(b, '\n')
}
