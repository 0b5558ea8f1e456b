package fcspec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// EnvCacheDir overrides where Load keeps compiled specs.
const EnvCacheDir = "BANGER_FC_SPEC_CACHE"

// tableFormat names the compiled table's layout; it is part of a cache
// entry's name, so entries written by an older layout are never read.
const tableFormat = "rules-v2"

// Load reads the Swagger 2.0 file at path and compiles it. Processes that
// start often (the fake Firecracker starts once per VM) pass a cacheDir: the
// compiled table is kept there as JSON, named by the SHA-256 of the spec's
// bytes and the table format, and later loads decode that instead of the
// YAML. A changed spec has another name, so a stale entry is never used.
// An empty cacheDir, an unreadable or corrupt entry, or a failed write falls
// back to (or simply stays with) compiling the YAML.
func Load(path, cacheDir string) (*Validator, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fcspec: read spec: %w", err)
	}
	var entry string
	if cacheDir != "" {
		sum := sha256.Sum256(raw)
		entry = filepath.Join(cacheDir, tableFormat+"-"+hex.EncodeToString(sum[:])+".json")
		if t, ok := readCacheEntry(entry); ok {
			return newValidator(t), nil
		}
	}
	t, err := compile(raw)
	if err != nil {
		return nil, fmt.Errorf("fcspec: %s: %w", path, err)
	}
	if entry != "" {
		_ = writeCacheEntry(entry, t) // best effort: the next start compiles again
	}
	return newValidator(t), nil
}

// DefaultCacheDir is $BANGER_FC_SPEC_CACHE, else banger-fcspec under the
// user's cache directory, else "" (no cache).
func DefaultCacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "banger-fcspec")
}

// readCacheEntry decodes a compiled table, refusing one whose indexes point
// outside it (a truncated or hand-edited entry must not panic the fake).
func readCacheEntry(entry string) (*table, bool) {
	data, err := os.ReadFile(entry)
	if err != nil {
		return nil, false
	}
	var t table
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // enum members compare as the YAML's numbers did
	if err := dec.Decode(&t); err != nil || t.check() != nil {
		return nil, false
	}
	return &t, true
}

// check reports an index that points outside the table.
func (t *table) check() error {
	ok := func(i int) bool { return i >= 0 && i < len(t.Schemas) }
	if len(t.Routes) == 0 {
		return fmt.Errorf("no routes")
	}
	for _, r := range t.Routes {
		if r.Body != nil && !ok(r.Body.Schema) {
			return fmt.Errorf("route %s %s: bad body schema", r.Method, r.Template)
		}
		for _, p := range r.Params {
			if !ok(p.Schema) {
				return fmt.Errorf("route %s %s: bad parameter schema", r.Method, r.Template)
			}
		}
	}
	for i, s := range t.Schemas {
		bad := (s.Items != nil && !ok(*s.Items)) || (s.Extra == extraSchema && !ok(s.ExtraSchema))
		for _, p := range s.Properties {
			bad = bad || !ok(p)
		}
		if bad {
			return fmt.Errorf("schema %d: bad reference", i)
		}
	}
	return nil
}

// writeCacheEntry stores t atomically.
func writeCacheEntry(entry string, t *table) error {
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(entry), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(entry), ".rules-*.tmp")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), entry)
}
