package httpx

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/rcm-platform/rcm/api/contract"
)

// PageLimit reads a list route's limit query parameter: the contract's
// DefaultPageSize when it is absent, ErrInvalidQuery when it is not
// MinPageSize to MaxPageSize.
func PageLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return contract.DefaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < contract.MinPageSize || n > contract.MaxPageSize {
		return 0, ErrInvalidQuery.With("reason", fmt.Sprintf("limit must be %d to %d", contract.MinPageSize, contract.MaxPageSize))
	}
	return n, nil
}
