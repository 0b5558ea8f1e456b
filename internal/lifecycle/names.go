package lifecycle

import (
	"crypto/rand"
	"encoding/hex"
)

// GeneratedName is PREFIX-<8 random hex digits>: a name for a VM nobody
// named (`banger run`, the MCP server's vm_create). It follows the name
// rule when prefix does.
func GeneratedName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails on Linux (getrandom)
	return prefix + "-" + hex.EncodeToString(b[:])
}
