package auth

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// FuzzVerify feeds arbitrary Authorization header values to Verify: it must
// never panic, and every refusal must be one of the two contract errors.
func FuzzVerify(f *testing.F) {
	k := mustKeys(f)
	srv := newJWKSServer(f, k.published)
	v, _ := newTestVerifier(f, baseConfig(srv))
	valid := mint(f, k.published, sessiontoken.Claims{Subject: "user_1", SessionID: "sess_1", OrgID: "org_1", Issuer: testIssuer, AuthorizedParty: testParty})
	noKID := sign(f, jwt.SigningMethodRS256, k.published.Private, "", validClaims())

	seeds := []string{
		"Bearer " + valid,
		"bearer " + valid,
		"Bearer " + noKID,
		"Bearer " + sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, k.published.ID, validClaims()),
		"Bearer " + sign(f, jwt.SigningMethodHS256, publicKeyPEM(f, k.published), k.published.ID, validClaims()),
		"", " ", "Bearer", "Bearer ", "Bearer  ", "Basic Zm9vOmJhcg==",
		"Bearer garbage", "Bearer ...", "Bearer a.b.c", "Bearer e30.e30.", "Bearer e30.e30.e30",
		"Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer \x00\xff\xfe", "Bearer é.é.é",
		"Bearer " + strings.Repeat("A", 1<<20),
		"Bearer " + strings.Repeat("a.", 1<<16),
		strings.Repeat("Bearer ", 1<<14),
		"Bearer " + strings.Repeat(valid, 8),
	}
	for i := 1; i < len(valid); i += len(valid) / 16 {
		seeds = append(seeds, "Bearer "+valid[:i])
	}
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, authorization string) {
		p, err := v.Verify(t.Context(), authorization)
		if err == nil {
			if p.UserID == "" || p.AccountID == "" {
				t.Fatalf("accepted %q with principal %+v, want a user and an account", authorization, p)
			}
			return
		}
		var he *httpx.Error
		if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
			t.Fatalf("refused %q with %v, want a 401 contract error", authorization, err)
		}
		if errors.Is(err, httpx.ErrMissingToken) == errors.Is(err, httpx.ErrInvalidToken) {
			t.Fatalf("refused %q with %v, want exactly one of ErrMissingToken and ErrInvalidToken", authorization, err)
		}
	})
}
