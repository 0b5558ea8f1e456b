package fcspec_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// cacheEntries lists the compiled specs Load left in dir.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(dir, "rules-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func loadCached(t *testing.T, spec, dir string) *fcspec.Validator {
	t.Helper()
	v, err := fcspec.Load(spec, dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return v
}

// A cold and a warm cached load judge every request as the uncached
// validator does.
func TestLoadCachedGivesTheSameVerdicts(t *testing.T) {
	spec := oas.SpecPathForTest(t)
	dir := t.TempDir()
	t.Run("miss", func(t *testing.T) { checkVerdicts(t, loadCached(t, spec, dir)) })
	if n := len(cacheEntries(t, dir)); n != 1 {
		t.Fatalf("after a miss the cache holds %d entries, want 1", n)
	}
	t.Run("hit", func(t *testing.T) { checkVerdicts(t, loadCached(t, spec, dir)) })
}

// The cache entry, not the YAML, is what a warm load decodes: an entry
// whose version was changed shows through.
func TestLoadCachedReadsTheEntry(t *testing.T) {
	spec := oas.SpecPathForTest(t)
	dir := t.TempDir()
	want := loadCached(t, spec, dir).SpecVersion()
	entries := cacheEntries(t, dir)
	if len(entries) != 1 {
		t.Fatalf("cache holds %d entries, want 1", len(entries))
	}
	data, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	marked := strings.Replace(string(data), `"version":"`+want+`"`, `"version":"cached-`+want+`"`, 1)
	if marked == string(data) {
		t.Fatalf("entry does not carry the version %q", want)
	}
	if err := os.WriteFile(entries[0], []byte(marked), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := loadCached(t, spec, dir).SpecVersion(); got != "cached-"+want {
		t.Fatalf("warm load has version %q, want the entry's %q", got, "cached-"+want)
	}
}

// A corrupt entry is not trusted, nor is one whose schema indexes point
// outside it (which would make the fake panic): the spec is compiled again
// and the entry replaced.
func TestLoadCachedRecoversFromABadEntry(t *testing.T) {
	for name, bad := range map[string]string{
		"truncated":    `{"version":"1","routes":[`,
		"bad index":    `{"version":"1","routes":[{"method":"PUT","template":"/x","body":{"schema":7}}],"schemas":[]}`,
		"no routes":    `{"version":"1","routes":[],"schemas":[]}`,
		"nested index": `{"version":"1","routes":[{"method":"PUT","template":"/x","body":{"schema":0}}],"schemas":[{"properties":{"a":3}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			spec := oas.SpecPathForTest(t)
			dir := t.TempDir()
			loadCached(t, spec, dir)
			entry := cacheEntries(t, dir)[0]
			if err := os.WriteFile(entry, []byte(bad), 0o600); err != nil {
				t.Fatal(err)
			}
			checkVerdicts(t, loadCached(t, spec, dir))
			data, err := os.ReadFile(entry)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) == bad {
				t.Fatalf("bad entry was not rewritten")
			}
		})
	}
}

// Without a cache directory Load compiles the YAML every time.
func TestLoadCachedWithoutADirectory(t *testing.T) {
	checkVerdicts(t, loadCached(t, oas.SpecPathForTest(t), ""))
}

// BenchmarkLoad compiles the YAML (a cache miss).
func BenchmarkLoad(b *testing.B) {
	spec, err := fcspec.SpecPath()
	if err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		if _, err := fcspec.Load(spec, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadCachedWarm is what each fake Firecracker start pays.
func BenchmarkLoadCachedWarm(b *testing.B) {
	spec, err := fcspec.SpecPath()
	if err != nil {
		b.Skip(err)
	}
	dir := b.TempDir()
	if _, err := fcspec.Load(spec, dir); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := fcspec.Load(spec, dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReferenceLoad is the same spec read by kin-openapi, for
// comparison (what the fake paid per start before it used Load).
func BenchmarkReferenceLoad(b *testing.B) {
	spec, err := fcspec.SpecPath()
	if err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		if _, err := oas.Load(spec); err != nil {
			b.Fatal(err)
		}
	}
}
