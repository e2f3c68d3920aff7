// Package apitest loads the API descriptions for tests that check real
// responses and events against them. Only tests import it, so the services
// do not link an OpenAPI library; the Go values of the contract are in
// package contract.
package apitest

import (
	"fmt"
	"io/fs"
	"net/url"
	"path"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/rcm-platform/rcm/api"
)

// LoadOpenAPI loads openapi.yaml with the schema files it refers to.
func LoadOpenAPI() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	loader.ReadFromURIFunc = func(_ *openapi3.Loader, u *url.URL) ([]byte, error) {
		return fs.ReadFile(api.Files, path.Clean(u.Path))
	}
	doc, err := loader.LoadFromFile("openapi.yaml")
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	return doc, nil
}
