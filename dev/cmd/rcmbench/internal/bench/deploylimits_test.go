package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// TestParseBytes: a Kubernetes limit and a GOMEMLIMIT, in binary units;
// anything else is refused.
func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"512Mi": 512 << 20, "400MiB": 400 << 20, "1Gi": 1 << 30, "64Ki": 64 << 10, "1000": 1000} {
		if got, err := parseBytes(s); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "Mi", "-1Mi", "512M", "0", "1.5Gi"} {
		if got, err := parseBytes(s); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", s, got)
		}
	}
}

// TestReadFeedLimits: the feed container's limits are read, another
// container's are not, and the repository's own manifest has all three.
func TestReadFeedLimits(t *testing.T) {
	manifest := `apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: sidecar
          env:
            - name: GOMEMLIMIT
              value: 1MiB
          resources:
            limits:
              memory: 2Mi
        - name: feed
          env:
            - name: RCM_FEED_MAX_STREAMS
              value: "300"
            - name: GOMEMLIMIT
              value: 40MiB
          resources:
            limits:
              memory: 50Mi
`
	path := filepath.Join(t.TempDir(), "feed.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readFeedLimits(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (feedLimits{limit: 50 << 20, soft: 40 << 20, streams: 300}); got != want {
		t.Fatalf("limits %+v, want %+v", got, want)
	}

	real, err := readFeedLimits(filepath.Join("..", "..", "..", "..", "..", feedManifest))
	if err != nil {
		t.Fatal(err)
	}
	if real.limit <= 0 || real.soft <= 0 || real.soft >= real.limit || real.streams <= 0 {
		t.Fatalf("the deploy's feed limits %+v: want a GOMEMLIMIT under the limit and a cap of streams", real)
	}
}
