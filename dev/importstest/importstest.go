// Package importstest checks what a package links: a test in a domain
// package calls NoTransport to show that its rules reach no network, broker
// or database client, so they stay plain Go that a table test can drive.
package importstest

import (
	"os/exec"
	"strings"
	"testing"
)

// module is the import path prefix of the platform's own packages.
const module = "github.com/rcm-platform/rcm/"

// Transport is what a domain package must not link: HTTP, the Kafka client
// and the MongoDB client (the BSON encoding alone is allowed).
var Transport = []string{
	"net/http",
	"github.com/twmb/franz-go",
	"go.mongodb.org/mongo-driver/v2/mongo",
	"go.mongodb.org/mongo-driver/v2/x/mongo",
}

// NoTransport fails t when the package in the current directory (a test's
// own package) depends, directly or not, on anything in Transport.
func NoTransport(t testing.TB) {
	t.Helper()
	Forbid(t, Transport...)
}

// Forbid fails t when the package in the current directory depends on one
// of the import paths forbidden or on a package below one of them. It names
// the imports that bring them in.
func Forbid(t testing.TB, forbidden ...string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}:{{join .Imports \" \"}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("go list -deps listed nothing")
	}
	banned := func(path string) bool {
		for _, f := range forbidden {
			if path == f || strings.HasPrefix(path, f+"/") {
				return true
			}
		}
		return false
	}
	self, _, _ := strings.Cut(lines[len(lines)-1], ":") // the package itself comes last
	// Name our own packages that bring a banned one in; only when none
	// does (a library does), name the library.
	var ours, theirs []string
	for _, line := range lines {
		pkg, imports, _ := strings.Cut(line, ":")
		if banned(pkg) {
			continue // what a banned package imports is not news
		}
		for _, imp := range strings.Fields(imports) {
			if !banned(imp) {
				continue
			}
			if strings.HasPrefix(pkg, module) {
				ours = append(ours, pkg+" imports "+imp)
			} else {
				theirs = append(theirs, pkg+" imports "+imp)
			}
		}
	}
	found := ours
	if len(found) == 0 {
		found = theirs
	}
	if len(found) > 0 {
		t.Errorf("%s depends on what it must not (%s):\n\t%s", self, strings.Join(forbidden, ", "), strings.Join(found, "\n\t"))
	}
}
