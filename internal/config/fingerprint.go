package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Fingerprint identifies the effective configuration: two configs with the
// same values have the same fingerprint, whatever their files' comments,
// order or spelled-out defaults. The daemon reports the fingerprint of the
// config it loaded, and the CLI compares it with the file as it is now.
func (c Config) Fingerprint() string {
	// Plain values only (strings, numbers, slices of them): this cannot fail.
	b, err := json.Marshal(c)
	if err != nil {
		panic("config: fingerprint: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
