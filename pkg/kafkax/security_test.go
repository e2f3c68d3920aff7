package kafkax

import "testing"

func TestSecurity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		opts    int
		wantErr bool
	}{
		{"plain text", nil, 0, false},
		{"tls", map[string]string{"RCM_KAFKA_TLS": "true"}, 1, false},
		{"tls off", map[string]string{"RCM_KAFKA_TLS": "false"}, 0, false},
		{"scram over tls", map[string]string{"RCM_KAFKA_TLS": "1", "RCM_KAFKA_SASL_MECHANISM": "scram-sha-512", "RCM_KAFKA_SASL_USERNAME": "u", "RCM_KAFKA_SASL_PASSWORD": "p"}, 2, false},
		{"plain sasl", map[string]string{"RCM_KAFKA_SASL_MECHANISM": "PLAIN"}, 1, false},
		{"unknown mechanism", map[string]string{"RCM_KAFKA_SASL_MECHANISM": "GSSAPI"}, 0, true},
		{"bad bool", map[string]string{"RCM_KAFKA_TLS": "yes please"}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := Security(func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr || len(opts) != tt.opts {
				t.Fatalf("got %d options, err %v; want %d, error %v", len(opts), err, tt.opts, tt.wantErr)
			}
		})
	}
}
