// Package sessiontoken makes Clerk-shaped session tokens for development and
// tests: an RSA signing key kept in a file, the JWKS document that publishes
// it, and RS256 tokens with Clerk's claims. Production tokens come from
// Clerk; the gateway verifies both the same way, through the JWKS URL.
package sessiontoken

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key and its key id.
type Key struct {
	Private *rsa.PrivateKey
	ID      string
}

// NewKey generates a 2048-bit RSA key.
func NewKey() (Key, error) {
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	return Key{Private: pk, ID: keyID(&pk.PublicKey)}, nil
}

func keyID(pub *rsa.PublicKey) string {
	der := x509.MarshalPKCS1PublicKey(pub)
	sum := sha256.Sum256(der)
	return "dev_" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// LoadOrCreateKey reads the PEM key at path, creating it (mode 0600) when it
// does not exist, so that tokens minted before a restart stay valid.
func LoadOrCreateKey(path string) (Key, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := NewKey()
		if err != nil {
			return Key{}, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return Key{}, fmt.Errorf("encode key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return Key{}, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return Key{}, fmt.Errorf("write key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return Key{}, fmt.Errorf("read key: %w", err)
	}
	return ParseKey(raw)
}

// ParseKey parses a PKCS#8 PEM RSA private key.
func ParseKey(pemBytes []byte) (Key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Key{}, errors.New("key file holds no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("parse key: %w", err)
	}
	pk, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return Key{}, fmt.Errorf("key is %T, want RSA", parsed)
	}
	return Key{Private: pk, ID: keyID(&pk.PublicKey)}, nil
}

// JWK is one public key of a JWKS document.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// JWKS returns the JWKS document publishing the public halves of keys.
func JWKS(keys ...Key) []byte {
	doc := struct {
		Keys []JWK `json:"keys"`
	}{Keys: []JWK{}}
	for _, k := range keys {
		pub := k.Private.PublicKey
		doc.Keys = append(doc.Keys, JWK{
			Kty: "RSA", Kid: k.ID, Use: "sig", Alg: "RS256",
			N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	b, _ := json.Marshal(doc)
	return b
}

// Claims are what a minted token says.
type Claims struct {
	Subject   string // Clerk user id, e.g. user_2abc
	SessionID string // Clerk session id, e.g. sess_2abc
	// OrgID is the active organization, written as v2's "o": {"id": ...}
	// unless V1 is set, then as "org_id".
	OrgID  string
	V1     bool
	Issuer string
	// AuthorizedParty is Clerk's azp: the origin the token was minted for.
	AuthorizedParty string
	IssuedAt        time.Time
	TTL             time.Duration // expiry = IssuedAt + TTL; negative mints an expired token
}

// Mint signs c with k (RS256, header kid = k.ID).
func Mint(k Key, c Claims) (string, error) {
	if c.Subject == "" {
		return "", errors.New("a token needs a subject")
	}
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	claims := jwt.MapClaims{
		"sub": c.Subject,
		"iat": iat.Unix(),
		"nbf": iat.Add(-5 * time.Second).Unix(),
		"exp": iat.Add(c.TTL).Unix(),
	}
	if c.SessionID != "" {
		claims["sid"] = c.SessionID
	}
	if c.Issuer != "" {
		claims["iss"] = c.Issuer
	}
	if c.AuthorizedParty != "" {
		claims["azp"] = c.AuthorizedParty
	}
	switch {
	case c.OrgID != "" && c.V1:
		claims["org_id"] = c.OrgID
		claims["org_role"] = "org:admin"
	case c.OrgID != "":
		claims["v"] = 2
		claims["o"] = map[string]any{"id": c.OrgID, "rol": "admin"}
	default:
		if !c.V1 {
			claims["v"] = 2
		}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = k.ID
	s, err := t.SignedString(k.Private)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
