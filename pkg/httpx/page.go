package httpx

import (
	"net/http"
	"strconv"
)

// Page sizes of every list route.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// PageLimit reads a list route's limit query parameter: DefaultPageSize
// when it is absent, ErrInvalidQuery when it is not 1 to MaxPageSize.
func PageLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return DefaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxPageSize {
		return 0, ErrInvalidQuery.With("reason", "limit must be 1 to 200")
	}
	return n, nil
}
