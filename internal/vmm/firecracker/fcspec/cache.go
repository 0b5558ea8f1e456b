package fcspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/oasdiff/yaml"
)

// EnvCacheDir overrides where Load keeps decoded specs.
const EnvCacheDir = "BANGER_FC_SPEC_CACHE"

// Load reads the Swagger 2.0 file at path, converts it to OpenAPI 3 and
// prepares a router for validation. Processes that start often (the fake
// Firecracker starts once per VM) pass a cacheDir: decoding the YAML is most
// of the cost, so the decoded Swagger 2.0 document is kept as JSON in cacheDir, named by the
// SHA-256 of the spec's bytes, and later loads decode that instead (about
// half the time). A changed spec has another name, so a stale entry is never
// used. An entry is written only when it decodes back to exactly the document
// the YAML gave, so a cached validator rejects what an uncached one rejects.
// An empty cacheDir, an unreadable or corrupt entry, or a failed write falls
// back to (or simply stays with) parsing the YAML.
func Load(path, cacheDir string) (*Validator, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fcspec: read spec: %w", err)
	}
	if cacheDir == "" {
		return loadParsed(path, raw)
	}
	sum := sha256.Sum256(raw)
	entry := filepath.Join(cacheDir, "swagger-"+hex.EncodeToString(sum[:])+".json")
	if doc2, ok := readCacheEntry(entry); ok {
		return newValidator(path, doc2)
	}
	doc2, err := parseSwagger(raw)
	if err != nil {
		return nil, fmt.Errorf("fcspec: parse %s: %w", path, err)
	}
	_ = writeCacheEntry(entry, raw, doc2) // best effort: the next start parses again
	return newValidator(path, doc2)
}

func loadParsed(path string, raw []byte) (*Validator, error) {
	doc2, err := parseSwagger(raw)
	if err != nil {
		return nil, fmt.Errorf("fcspec: parse %s: %w", path, err)
	}
	return newValidator(path, doc2)
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

func readCacheEntry(entry string) (*openapi2.T, bool) {
	data, err := os.ReadFile(entry)
	if err != nil {
		return nil, false
	}
	var doc2 openapi2.T
	if err := json.Unmarshal(data, &doc2); err != nil {
		return nil, false
	}
	return &doc2, true
}

// writeCacheEntry stores the spec's YAML as JSON, atomically, after checking
// that the JSON decodes to exactly the document the YAML gave (doc2).
func writeCacheEntry(entry string, raw []byte, doc2 *openapi2.T) error {
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return err
	}
	var back openapi2.T
	if err := json.Unmarshal(data, &back); err != nil {
		return err
	}
	if !reflect.DeepEqual(&back, doc2) {
		return errors.New("fcspec: the spec's JSON form decodes differently; not caching it")
	}
	if err := os.MkdirAll(filepath.Dir(entry), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(entry), ".swagger-*.tmp")
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
