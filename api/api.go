// Package api holds the platform's public contracts as files: the OpenAPI
// description of the gateway, the AsyncAPI description of the topics, and
// the JSON Schemas of every event and message. Code and tests read them from
// here so that the contract a reader sees is the one that is enforced.
package api

import "embed"

// Files holds openapi.yaml, asyncapi.yaml and schemas/*.json.
//
//go:embed openapi.yaml asyncapi.yaml schemas/*.json
var Files embed.FS

// SchemaBaseURI is the base of every schema's $id; a schema file
// schemas/X.json has the $id SchemaBaseURI + "X.json".
const SchemaBaseURI = "https://rcm.example.com/schemas/"
