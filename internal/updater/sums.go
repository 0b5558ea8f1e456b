package updater

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
)

// maxSHA256SUMSSize bounds the checksum list; a release lists a handful of
// files.
const maxSHA256SUMSSize = 64 << 10

// Checksums maps a file's base name to its lowercase hex SHA-256, as
// listed in a release's SHA256SUMS.
type Checksums map[string]string

// Lookup returns name's checksum.
func (c Checksums) Lookup(name string) (string, bool) {
	s, ok := c[name]
	return s, ok
}

// ParseSHA256SUMS parses the output of `sha256sum` strictly: every line is
// 64 lowercase hex digits, two spaces (or a space and '*', binary mode), and
// a plain file name of letters, digits, '.', '_', '-' and '+'. It refuses
// empty input, blank lines, CR, paths, sha256sum's escaped names, and a
// name listed twice — the file is signed, but a lenient parser would still
// let a malformed line mean something nobody signed off on.
func ParseSHA256SUMS(data []byte) (Checksums, error) {
	if len(data) == 0 {
		return nil, errors.New("SHA256SUMS is empty")
	}
	if len(data) > maxSHA256SUMSSize {
		return nil, fmt.Errorf("SHA256SUMS is %d bytes, more than the %d allowed", len(data), maxSHA256SUMSSize)
	}
	if data[len(data)-1] != '\n' {
		return nil, errors.New("SHA256SUMS does not end with a newline (truncated?)")
	}
	sums := Checksums{}
	for i, line := range bytes.Split(data[:len(data)-1], []byte{'\n'}) {
		n := i + 1
		// 64 hex + 2 separator + at least one name byte.
		if len(line) < 67 {
			return nil, fmt.Errorf("SHA256SUMS line %d is too short to be \"<sha256>  <name>\"", n)
		}
		hexSum, sep, name := line[:64], line[64:66], string(line[66:])
		if !isLowerHex(hexSum) {
			return nil, fmt.Errorf("SHA256SUMS line %d does not start with 64 lowercase hex digits", n)
		}
		if sep[0] != ' ' || (sep[1] != ' ' && sep[1] != '*') {
			return nil, fmt.Errorf("SHA256SUMS line %d: checksum and name must be separated by two spaces or \" *\"", n)
		}
		if !validFileName(name) {
			return nil, fmt.Errorf("SHA256SUMS line %d: %q is not a plain file name", n, name)
		}
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("SHA256SUMS lists %q twice", name)
		}
		sums[name] = string(hexSum)
	}
	return sums, nil
}

func isLowerHex(b []byte) bool {
	if _, err := hex.DecodeString(string(b)); err != nil {
		return false
	}
	return bytes.Equal(b, bytes.ToLower(b))
}

// validFileName accepts the names a release publishes and nothing that
// could be read as a path.
func validFileName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == '-' || c == '+':
		default:
			return false
		}
	}
	return true
}
