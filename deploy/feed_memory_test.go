package deploy

import (
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The feed's memory, measured with the fan-out benchmark: 10,000 SSE
// streams straight to one feed instance over 1,000 accounts, one event per
// account at 100/s and one more at 500/s, VmRSS from /proc:
//
//	bin/rcmbench -scenarios fanout -out ""
//
// 28 MiB before connecting, 90 MiB connected (6.3 KiB a stream), 98 MiB
// after delivery (7.2 KiB a stream): a stream's connection is taken over
// from net/http, so it holds no handler goroutine and no buffers while
// idle. The figures below round the worst up, with room for the kernel's
// share of a socket and for a writer goroutine per stream in a burst.
const (
	feedStreamKiB = 12 // resident memory of one open stream, after delivery
	feedBaseMiB   = 64 // resident memory of an instance with no stream
	// feedHeadroom is the share of the limit the streams and the base may
	// fill: the rest is for the garbage collector, bursts of history
	// reads and the consumer's batches.
	feedHeadroom = 0.8
)

// feedNeeds is the resident memory of an instance holding streams streams.
func feedNeeds(streams int64) int64 {
	return streams*feedStreamKiB<<10 + feedBaseMiB<<20
}

// checkFeedMemory fails unless the cap is set and the limits hold what the
// cap lets in.
func checkFeedMemory(t *testing.T, where, maxStreams, limit, goMemLimit string) {
	t.Helper()
	streams, err := strconv.ParseInt(maxStreams, 10, 64)
	if err != nil || streams < 1 {
		t.Fatalf("%s: RCM_FEED_MAX_STREAMS %q: want the cap set, sized to the memory limit", where, maxStreams)
	}
	need := feedNeeds(streams)
	lim, err := resource.ParseQuantity(limit)
	if err != nil {
		t.Fatalf("%s: memory limit %q: %v", where, limit, err)
	}
	if float64(lim.Value())*feedHeadroom < float64(need) {
		t.Errorf("%s: %d streams × %d KiB + %d MiB = %d MiB, more than %.0f%% of the limit %s",
			where, streams, feedStreamKiB, feedBaseMiB, need>>20, feedHeadroom*100, limit)
	}
	soft, err := resource.ParseQuantity(strings.TrimSuffix(goMemLimit, "B"))
	if err != nil || soft.Value() < need || soft.Cmp(lim) >= 0 {
		t.Errorf("%s: GOMEMLIMIT %q: want between what %d streams need (%d MiB) and the limit %s (%v)",
			where, goMemLimit, streams, need>>20, limit, err)
	}
}

func TestFeedMemoryFitsStreamCapKubernetes(t *testing.T) {
	d, ok := buildBase(t).deployments["feed"]
	if !ok {
		t.Fatal("no feed Deployment")
	}
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	lim := c.Resources.Limits[corev1.ResourceMemory]
	checkFeedMemory(t, "deploy/k8s feed", env["RCM_FEED_MAX_STREAMS"], lim.String(), env["GOMEMLIMIT"])
}

func TestFeedMemoryFitsStreamCapCompose(t *testing.T) {
	feed, ok := mustLoadCompose(t).Services["feed"]
	if !ok {
		t.Fatal("no feed service")
	}
	if feed.MemLimit == 0 {
		t.Fatal("docker-compose feed: no mem_limit")
	}
	checkFeedMemory(t, "docker-compose feed", env(feed, "RCM_FEED_MAX_STREAMS"), strconv.FormatInt(int64(feed.MemLimit), 10), env(feed, "GOMEMLIMIT"))
}

// The production configurations check the token's azp: the ConfigMap names
// an authorized party (a placeholder the overlay replaces), and compose
// refuses to start without one (TestComposeRequiresSettings).
func TestAuthorizedPartiesSet(t *testing.T) {
	m := buildBase(t)
	for name, c := range m.configMaps {
		if strings.TrimSpace(c.Data["RCM_CLERK_AUTHORIZED_PARTIES"]) == "" {
			t.Errorf("ConfigMap %s: RCM_CLERK_AUTHORIZED_PARTIES is empty: the gateway would not check azp", name)
		}
	}
	gw := mustLoadCompose(t).Services["gateway"]
	if got, want := env(gw, "RCM_CLERK_AUTHORIZED_PARTIES"), composeEnv()["RCM_CLERK_AUTHORIZED_PARTIES"]; got != want {
		t.Errorf("docker-compose gateway: RCM_CLERK_AUTHORIZED_PARTIES %q, want %q from .env", got, want)
	}
}
