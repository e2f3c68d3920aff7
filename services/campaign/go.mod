module github.com/rcm-platform/rcm/services/campaign

go 1.26.0

require github.com/rcm-platform/rcm/pkg v0.0.0

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/oklog/ulid/v2 v2.1.2 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/rcm-platform/rcm/api v0.0.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	github.com/twmb/franz-go v1.22.3 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace (
	github.com/rcm-platform/rcm/api => ../../api
	github.com/rcm-platform/rcm/pkg => ../../pkg
)
