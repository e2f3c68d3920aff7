package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// feedManifest is where the deploy sets what one feed instance may hold,
// relative to the repository's root (make bench runs there).
const feedManifest = "deploy/k8s/base/feed.yaml"

// feedLimits is what the deploy gives one feed instance: its memory
// limit, GOMEMLIMIT and cap of open streams (RCM_FEED_MAX_STREAMS), in
// bytes and streams.
type feedLimits struct {
	limit, soft, streams int64
}

// readFeedLimits reads the feed's limits from its Deployment manifest.
func readFeedLimits(path string) (feedLimits, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return feedLimits{}, err
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string
						Env  []struct {
							Name, Value string
						}
						Resources struct {
							Limits struct {
								Memory string
							}
						}
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		return feedLimits{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "feed" {
			continue
		}
		var l feedLimits
		if l.limit, err = parseBytes(c.Resources.Limits.Memory); err != nil {
			return feedLimits{}, fmt.Errorf("%s: memory limit: %w", path, err)
		}
		for _, e := range c.Env {
			switch e.Name {
			case "GOMEMLIMIT":
				l.soft, err = parseBytes(e.Value)
			case "RCM_FEED_MAX_STREAMS":
				l.streams, err = strconv.ParseInt(e.Value, 10, 64)
			}
			if err != nil {
				return feedLimits{}, fmt.Errorf("%s: %s: %w", path, e.Name, err)
			}
		}
		if l.soft == 0 || l.streams == 0 {
			return feedLimits{}, fmt.Errorf("%s: the feed sets no GOMEMLIMIT or RCM_FEED_MAX_STREAMS", path)
		}
		return l, nil
	}
	return feedLimits{}, fmt.Errorf("%s: no container named feed", path)
}

// parseBytes reads a memory size as a Kubernetes limit ("512Mi") or
// GOMEMLIMIT ("400MiB") writes it, in binary units.
func parseBytes(s string) (int64, error) {
	num := strings.TrimSuffix(s, "B")
	shift := 0
	for i, unit := range []string{"Ki", "Mi", "Gi"} {
		if strings.HasSuffix(num, unit) {
			num, shift = strings.TrimSuffix(num, unit), 10*(i+1)
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory size %q: want a positive number of bytes, Ki, Mi or Gi", s)
	}
	return n << shift, nil
}
