package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func rcmctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "rcmctl"), args...)
	cmd.Env = append(os.Environ(),
		"RCM_DATA_DIR="+stk.DataDir(),
		"RCM_KAFKA_BROKERS="+stk.KafkaAddr(),
		"RCM_CLERK_ISSUER="+stk.JWKS().Issuer(),
	)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestRcmctl drives the walk-through's commands against the running stack:
// tokens the gateway accepts (or, expired, refuses) and documents that are
// applied by the time the command returns.
func TestRcmctl(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	doc := "doc_ctl_" + acct
	if out, err := rcmctl(t, "documents", "put", "--id", doc, "--account", acct, "--loan", "BEHIND"); err != nil {
		t.Fatalf("documents put: %v\n%s", err, out)
	}
	tok, err := rcmctl(t, "token", "--sub", "user_ctl", "--org", acct)
	if err != nil || strings.Count(tok, ".") != 2 || strings.Contains(tok, "\n") {
		t.Fatalf("token: got %q %v, want one JWT line", tok, err)
	}
	// The very next command may rely on the document being applied.
	id := startCampaign(t, tok, doc, startBody())["id"].(string)

	v1, err := rcmctl(t, "token", "--sub", "user_ctl", "--org", acct, "--v1")
	if err != nil {
		t.Fatal(err)
	}
	if r := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, v1, nil); r.Status != http.StatusOK {
		t.Fatalf("v1 org token: got %d %s, want 200", r.Status, r.Body)
	}
	expired, err := rcmctl(t, "token", "--sub", "user_ctl", "--org", acct, "--ttl", "-1m")
	if err != nil {
		t.Fatal(err)
	}
	call(t, "GET", "/v1/documents/"+doc+"/rcm", expired, nil).wantError(t, http.StatusUnauthorized, invalidToken)

	if out, err := rcmctl(t, "documents", "put", "--id", doc, "--account", acct, "--loan", "CURRENT"); err != nil {
		t.Fatalf("documents put CURRENT: %v\n%s", err, out)
	}
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil).JSON(t)["campaign"].(map[string]any)
	if c["active"] != false || c["endReason"] != "loan_current" {
		t.Fatalf("after the loan turned CURRENT: got %v, want the campaign ended", c)
	}
	if out, err := rcmctl(t, "documents", "delete", "--id", doc); err != nil {
		t.Fatalf("documents delete: %v\n%s", err, out)
	}
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, startBody()).wantError(t, http.StatusNotFound, notFound)
	if out, err := rcmctl(t, "token"); err == nil {
		t.Fatalf("token without --sub: got %q, want an error", out)
	}
}
