package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kadm"
)

// newHTTPClient keeps up to idle connections per host alive, so that a
// closed loop of that many workers reuses its connections.
func newHTTPClient(idle int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = idle * 4
	t.MaxIdleConnsPerHost = idle
	t.DisableCompression = true
	return &http.Client{Transport: t, Timeout: 60 * time.Second}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startBody is a valid start-campaign body, already as the gateway
// normalizes it (trimmed strings, the fields it forwards), so that the
// same bytes go to the gateway and straight to the campaign service.
var startBody = []byte(`{"sms":true,"email":true,"call":false,"tone":"professional and empathetic",` +
	`"cadence":"day 1, day 5, day 14","notes":"Borrower previously responded well to SMS outreach."}`)

// startPath is the start-campaign route of a document.
func startPath(doc string) string { return "/v1/documents/" + doc + "/rcm" }

// gatewayRequest is a public request with a session token.
func (e *env) gatewayRequest(ctx context.Context, method, path, token string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.stk.GatewayURL()+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

// serviceRequest is an internal request to service carrying account's
// principal, signed as the gateway signs it, with a request id as the
// gateway sends one.
func (e *env) serviceRequest(ctx context.Context, service, method, path, account string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.stk.URL(service)+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(httpx.HeaderRequestID, httpx.NewRequestID())
	err = e.signer.Sign(req, principal.Principal{AccountID: account, UserID: account, SessionID: "sess_bench"})
	return req, err
}

// do sends req and returns the body of an answer with status want.
func (e *env) do(client *http.Client, req *http.Request, want int) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return body, fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, bytes.TrimSpace(body))
	}
	return body, nil
}

// campaignID reads the id of the campaign in a 201's body.
func campaignID(body []byte) (string, error) {
	var out struct {
		Campaign struct {
			ID string `json:"id"`
		} `json:"campaign"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Campaign.ID == "" {
		return "", fmt.Errorf("no campaign in %q", body)
	}
	return out.Campaign.ID, nil
}

// errNoMetric is a metric with no sample: a name no service exposes, or
// a counter with labels that has counted nothing yet.
var errNoMetric = errors.New("no metric")

// metric sums every sample of a metric on a service's /metrics; a name
// with labels (`name{label="v"}`) sums the samples that carry them.
func (e *env) metric(ctx context.Context, service, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.stk.URL(service)+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	base, labels, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, base+" ") && !strings.HasPrefix(line, base+"{") {
			continue
		}
		if !hasLabels(line[len(base):strings.LastIndexByte(line, ' ')], labels) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", service, line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: %w %s", service, errNoMetric, name)
	}
	return sum, nil
}

// hasLabels reports whether a sample's label set ({a="x",b="y"}, or
// none) holds each of labels (a="x",…; "" holds in every set). Label
// values here hold no comma.
func hasLabels(set, labels string) bool {
	if labels == "" {
		return true
	}
	have := strings.Split(strings.Trim(set, "{}"), ",")
	for _, l := range strings.Split(labels, ",") {
		if !slices.Contains(have, l) {
			return false
		}
	}
	return true
}

// settle waits until every event is recorded: the relay has published
// every campaign started here, and the compliance and feed consumer groups
// have committed every record of the event topic, which they do only once
// the entries and items are durably written. The work a measurement
// started must not run into the next one; this also proves no event was
// lost on the way.
func (e *env) settle(ctx context.Context) error {
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	for {
		published, err := e.metric(wait, stack.Campaign, `rcm_outbox_publish_total{outcome="ok"}`)
		if err != nil {
			return err
		}
		var lag int64
		if int(published) >= e.started {
			if lag, err = e.lag(wait, groupCompliance, groupFeed); err != nil {
				return err
			}
			if lag == 0 {
				if d := time.Since(start); d > time.Second {
					e.logf("  pipeline settled in %s", d.Round(100*time.Millisecond))
				}
				return nil
			}
		}
		select {
		case <-wait.Done():
			return fmt.Errorf("the pipeline did not settle: the relay published %d of %d events, consumer lag %d (%s): %w",
				int(published), e.started, lag, e.diagnose(ctx), wait.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Consumer groups of the event topic.
const (
	groupCompliance = "rcm-compliance"
	groupFeed       = "rcm-feed"
)

// lag is how many records of the event topic the groups have not
// committed yet, summed.
func (e *env) lag(ctx context.Context, groups ...string) (int64, error) {
	adm := kadm.NewClient(e.kafka)
	ends, err := adm.ListEndOffsets(ctx, events.Topic)
	if err != nil {
		return 0, err
	}
	if err := ends.Error(); err != nil {
		return 0, err
	}
	var lag int64
	for _, g := range groups {
		committed, err := adm.FetchOffsets(ctx, g)
		if err != nil {
			return 0, err
		}
		ends.Each(func(o kadm.ListedOffset) {
			at := int64(0)
			if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.At > 0 {
				at = c.At
			}
			lag += max(0, o.Offset-at)
		})
	}
	return lag, nil
}

// diagnose reads the metrics that tell where events are held up.
func (e *env) diagnose(ctx context.Context) string {
	var out []string
	for _, m := range []struct{ service, name string }{
		{stack.Campaign, `rcm_outbox_publish_total{outcome="ok"}`},
		{stack.Campaign, "rcm_outbox_swept_events_total"},
		{stack.Campaign, "rcm_outbox_pending_events"},
		{stack.Compliance, "rcm_compliance_appends_total"},
		{stack.Compliance, "rcm_compliance_replays_total"},
		{stack.Feed, "rcm_feed_items_stored_total"},
		{stack.Feed, "rcm_feed_items_replayed_total"},
	} {
		v, err := e.metric(ctx, m.service, m.name)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", m.name, err))
			continue
		}
		out = append(out, fmt.Sprintf("%s %d", m.name, int64(v)))
	}
	adm := kadm.NewClient(e.kafka)
	ends, err := adm.ListEndOffsets(ctx, events.Topic)
	if err != nil {
		return strings.Join(append(out, fmt.Sprintf("end offsets: %v", err)), ", ")
	}
	for _, group := range []string{groupCompliance, groupFeed} {
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			out = append(out, fmt.Sprintf("%s offsets: %v", group, err))
			continue
		}
		var parts []string
		ends.Each(func(o kadm.ListedOffset) {
			at := int64(-1)
			if c, ok := committed.Lookup(o.Topic, o.Partition); ok {
				at = c.At
			}
			parts = append(parts, fmt.Sprintf("p%d %d/%d", o.Partition, at, o.Offset))
		})
		slices.Sort(parts)
		out = append(out, fmt.Sprintf("%s committed/end %s", group, strings.Join(parts, " ")))
	}
	return strings.Join(out, ", ")
}

// rssKiB is a process's resident set size.
func rssKiB(pid int) (int64, error) {
	return procStatus(pid, "VmRSS:")
}

func procStatus(pid int, field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// openFilesLimit is a process's soft RLIMIT_NOFILE, from /proc.
func openFilesLimit(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			if f[0] == "unlimited" {
				return 1 << 62, nil
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/limits has no open files limit", pid)
}
