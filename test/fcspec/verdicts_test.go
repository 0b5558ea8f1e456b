package fcspec_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

type validateCase struct {
	name         string
	method, path string
	body         string
	wantErr      error // nil means accepted
	wantMsg      string
}

// validateCases are requests with Firecracker's verdict on each; both
// validators, and every way of loading the compiled one, must give them.
var validateCases = []validateCase{
	{"boot source", "PUT", "/boot-source", `{"kernel_image_path":"/k","boot_args":"console=ttyS0"}`, nil, ""},
	{"machine config", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`, nil, ""},
	{"instance info", "GET", "/", ``, nil, ""},
	{"action", "PUT", "/actions", `{"action_type":"InstanceStart"}`, nil, ""},
	{"mmds free form", "PUT", "/mmds", `{"latest":{"meta-data":{"x":1}}}`, nil, ""},
	{"drive", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":false}`, nil, ""},

	{"unknown path", "GET", "/nope", ``, fcspec.ErrUnknownPath, ""},
	{"wrong method", "DELETE", "/boot-source", ``, fcspec.ErrMethodNotAllowed, ""},
	{"unknown field", "PUT", "/boot-source", `{"kernel_image_path":"/k","kernel_args":"x"}`, fcspec.ErrInvalidRequest, "kernel_args"},
	{"unknown nested field", "PUT", "/drives/d", `{"drive_id":"d","is_root_device":false,"rate_limiter":{"ops":{"size":1,"refill_time":1,"burst":2}}}`, fcspec.ErrInvalidRequest, "burst"},
	{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":512}`, fcspec.ErrInvalidRequest, "vcpu_count"},
	{"not an integer", "PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":512}`, fcspec.ErrInvalidRequest, "vcpu_count"},
	{"above maximum", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":512}`, fcspec.ErrInvalidRequest, "vcpu_count"},
	{"below minimum", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v.sock"}`, fcspec.ErrInvalidRequest, "guest_cid"},
	{"bad enum", "PUT", "/actions", `{"action_type":"Reboot"}`, fcspec.ErrInvalidRequest, "action_type"},
	{"missing required", "PUT", "/boot-source", `{"boot_args":"x"}`, fcspec.ErrInvalidRequest, "kernel_image_path"},
	{"missing required body", "PUT", "/actions", ``, fcspec.ErrInvalidRequest, ""},
	{"not json", "PUT", "/actions", `{action_type:`, fcspec.ErrInvalidRequest, ""},
	{"body on GET", "GET", "/version", `{}`, fcspec.ErrInvalidRequest, ""},
	{"path id mismatch", "PUT", "/drives/a", `{"drive_id":"b","is_root_device":false}`, fcspec.ErrInvalidRequest, "does not match"},
}

func TestValidateRequest(t *testing.T) {
	checkVerdicts(t, loadForTest(t))
}

func TestReferenceValidateRequest(t *testing.T) {
	checkVerdicts(t, oas.LoadForTest(t))
}

func checkVerdicts(t *testing.T, v requestValidator) {
	t.Helper()
	for _, tt := range validateCases {
		t.Run(tt.name, func(t *testing.T) {
			err := v.ValidateRequest(tt.method, tt.path, []byte(tt.body))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("want %v, got %v", tt.wantErr, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	v := loadForTest(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if err := v.ValidateRequest("PUT", "/machine-config", []byte(`{"vcpu_count":2,"mem_size_mib":256}`)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestSpecPathEnvOverride(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	t.Setenv(fcspec.EnvSpecPath, missing)
	if _, err := fcspec.SpecPath(); !errors.Is(err, fcspec.ErrSpecNotFound) {
		t.Fatalf("want ErrSpecNotFound for a missing override, got %v", err)
	}
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte("swagger: \"2.0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fcspec.EnvSpecPath, p)
	got, err := fcspec.SpecPath()
	if err != nil || got != p {
		t.Fatalf("SpecPath() = %q, %v; want %q", got, err, p)
	}
}

func TestLoadRejectsNonSwagger2(t *testing.T) {
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte("openapi: 3.0.0\ninfo: {title: x, version: \"1\"}\npaths: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fcspec.Load(p, ""); err == nil || !strings.Contains(err.Error(), "Swagger 2.0") {
		t.Fatalf("want a Swagger 2.0 error, got %v", err)
	}
}

// A schema keyword the compiled validator does not implement is refused at
// load, not silently skipped: a later spec that starts using one must not
// make the fake more lenient than the reference.
func TestLoadRefusesUnsupportedKeywords(t *testing.T) {
	for _, kw := range []string{"pattern: '^a$'", "minLength: 1", "x-nullable: true", "exclusiveMinimum: true", "readOnly: true"} {
		p := filepath.Join(t.TempDir(), "spec.yaml")
		spec := `swagger: "2.0"
info: {title: x, version: "1"}
basePath: /
consumes: [application/json]
paths:
  /x:
    put:
      parameters:
        - name: body
          in: body
          required: true
          schema:
            type: object
            properties:
              name:
                type: string
                ` + kw + `
      responses: {204: {description: ok}}
`
		if err := os.WriteFile(p, []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
		key, _, _ := strings.Cut(kw, ":")
		if _, err := fcspec.Load(p, ""); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want a load error naming it, got %v", key, err)
		}
	}
}
