package contact

import (
	"slices"

	"github.com/rcm-platform/rcm/api/contract"
)

// ValidOutcome reports whether an attempt on channel may take outcome
// (contract.Outcomes).
func ValidOutcome(channel, outcome string) bool {
	return slices.Contains(contract.Outcomes(channel), outcome)
}
