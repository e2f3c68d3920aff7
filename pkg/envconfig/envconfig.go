// Package envconfig reads a service's RCM_* environment variables into its
// config struct, with working local defaults, collecting every bad value
// into one error.
package envconfig

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Reader reads variables through getenv and remembers what it could not
// parse.
type Reader struct {
	getenv func(string) string
	errs   []error
}

// New returns a Reader over getenv (os.Getenv, or a map in tests).
func New(getenv func(string) string) *Reader { return &Reader{getenv: getenv} }

// String returns the variable, or def when it is unset or empty.
func (r *Reader) String(key, def string) string {
	if v := r.getenv(key); v != "" {
		return v
	}
	return def
}

// Duration parses a Go duration ("250ms", "10s").
func (r *Reader) Duration(key string, def time.Duration) time.Duration {
	v := r.getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return d
}

// Int parses a decimal integer.
func (r *Reader) Int(key string, def int) int {
	v := r.getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return n
}

// Bool parses true/false/1/0.
func (r *Reader) Bool(key string, def bool) bool {
	v := r.getenv(key)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return b
}

// Err returns every parse failure, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }
