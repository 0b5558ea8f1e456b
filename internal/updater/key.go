package updater

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PlaceholderPublicKey is what releasePublicKey holds in a build that was
// not given the release key (make build, go run, go test).
const PlaceholderPublicKey = "PLACEHOLDER-banger-release-key-not-embedded"

// releasePublicKey is the release signing key's public half, set by
// scripts/publish-banger-release.sh with
//
//	-ldflags "-X github.com/banger-dev/banger/internal/updater.releasePublicKey=<base64 DER>"
//
// It is a variable only because -X can set nothing else; read it through
// EmbeddedPublicKey.
var releasePublicKey = PlaceholderPublicKey

// Errors callers branch on.
var (
	// ErrPlaceholderKey: this build carries no release key, so it cannot
	// tell a real release from a forged one and refuses to update.
	ErrPlaceholderKey = errors.New("this banger was built without the release signing key, so it cannot verify releases; " +
		"install a published release build, or update by rebuilding from source and rerunning `sudo banger system install`")
	// ErrBadSignature: SHA256SUMS.sig does not verify against the key.
	ErrBadSignature = errors.New("the signature on SHA256SUMS does not match the release key")
)

// EmbeddedPublicKey returns the release public key this binary was built
// with, or PlaceholderPublicKey.
func EmbeddedPublicKey() string { return releasePublicKey }

// IsPlaceholderKey reports whether key is missing or the placeholder.
func IsPlaceholderKey(key string) bool {
	key = strings.TrimSpace(key)
	return key == "" || key == PlaceholderPublicKey
}

// ParsePublicKey parses an ECDSA P-256 public key given either as PEM
// ("-----BEGIN PUBLIC KEY-----", as `cosign generate-key-pair` writes
// cosign.pub) or as the bare base64 of its PKIX DER, which is the form
// that survives -ldflags -X (no newlines).
func ParsePublicKey(key string) (*ecdsa.PublicKey, error) {
	if IsPlaceholderKey(key) {
		return nil, ErrPlaceholderKey
	}
	var der []byte
	if block, _ := pem.Decode([]byte(strings.TrimSpace(key))); block != nil {
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("release public key: PEM block is %q, want \"PUBLIC KEY\"", block.Type)
		}
		der = block.Bytes
	} else {
		var err error
		der, err = base64.StdEncoding.DecodeString(strings.TrimSpace(key))
		if err != nil {
			return nil, fmt.Errorf("release public key is neither PEM nor base64 DER: %w", err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("release public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("release public key is a %T, want an ECDSA P-256 key", pub)
	}
	return ec, nil
}

// maxSignatureSize bounds SHA256SUMS.sig: a base64 P-256 DER signature is
// under 100 bytes.
const maxSignatureSize = 4 << 10

// VerifySignature checks sig, in cosign sign-blob format (base64 of the
// ASN.1 DER ECDSA signature over the SHA-256 of data, optionally followed
// by a newline), against pub. It fails with ErrBadSignature.
func VerifySignature(pub *ecdsa.PublicKey, data, sig []byte) error {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil {
		return fmt.Errorf("%w: the signature is not base64 (%v)", ErrBadSignature, err)
	}
	digest := sha256.Sum256(data)
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		return ErrBadSignature
	}
	return nil
}
