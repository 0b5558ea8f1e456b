package openapi

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/banger-dev/banger/internal/api"
)

// repoRoot is the repository root, seen from this package's directory.
var repoRoot = filepath.Join("..", "..", "..", "..")

const updateCommand = "go generate ./pkg/client"

// TestOpenAPIDocumentIsCurrent regenerates the document and compares it with
// docs/api/openapi.json; with BANGER_UPDATE_OPENAPI=1 (what `go generate
// ./pkg/client` sets) it rewrites the file instead.
func TestOpenAPIDocumentIsCurrent(t *testing.T) {
	got, err := Generate(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, got)
	path := filepath.Join(repoRoot, "docs", "api", "openapi.json")
	if os.Getenv("BANGER_UPDATE_OPENAPI") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; create it with `%s`", err, updateCommand)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/api/openapi.json is out of date with internal/api; update it with `%s`", updateCommand)
	}
}

// validate fails unless doc is a valid OpenAPI 3 document.
func validate(t *testing.T, doc []byte) {
	t.Helper()
	loader := openapi3.NewLoader()
	spec, err := loader.LoadFromData(doc)
	if err != nil {
		t.Fatalf("the generated document does not load: %v", err)
	}
	if err := spec.Validate(context.Background()); err != nil {
		t.Fatalf("the generated document is not valid OpenAPI: %v", err)
	}
}

// TestTableDriftIsCaught: a method the daemon registers but the table
// lacks, and a table entry that contradicts the Go client, both stop
// generation instead of publishing a wrong document.
func TestTableDriftIsCaught(t *testing.T) {
	src := newSources(repoRoot)
	apiPkg, err := src.pkg(modulePath + "/internal/api")
	if err != nil {
		t.Fatal(err)
	}
	ops := operations()
	if err := checkTable(repoRoot, ops, apiPkg); err != nil {
		t.Fatalf("the real table: %v", err)
	}
	err = checkTable(repoRoot, ops[1:], apiPkg)
	if err == nil || !strings.Contains(err.Error(), ops[0].method) {
		t.Fatalf("dropping %s from the table: err %v, want one naming it", ops[0].method, err)
	}
	for _, o := range ops {
		wrong := o
		wrong.progress = !o.progress
		if o.upgrade == "" && checkOperation(wrong) == nil {
			t.Errorf("%s with progress %v passed the client check", o.method, wrong.progress)
		}
		wrong = o
		wrong.req = reflect.TypeFor[api.ImagePullRequest]()
		if o.req != wrong.req && checkOperation(wrong) == nil {
			t.Errorf("%s with request ImagePullRequest passed the client check", o.method)
		}
	}
}
