package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestMCPListenerRefusesNonLoopback(t *testing.T) {
	for _, spec := range []string{"0.0.0.0:0", ":0", "192.0.2.1:80", "example.com:80", "nonsense"} {
		if l, err := mcpListener(spec); err == nil {
			_ = l.Close()
			t.Errorf("mcpListener(%q) listened", spec)
		}
	}
	l, err := mcpListener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	sock := filepath.Join(t.TempDir(), "mcp.sock")
	l, err = mcpListener("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
}

func TestLabelsFlags(t *testing.T) {
	got, err := parseLabels([]string{"team=infra", "creator=mcp:x"})
	if err != nil || len(got) != 2 || got["creator"] != "mcp:x" {
		t.Fatalf("parseLabels = %v, %v", got, err)
	}
	if _, err := parseLabels([]string{"Bad=x"}); err == nil || !strings.Contains(err.Error(), "--label: invalid label key") {
		t.Fatalf("bad key: %v", err)
	}
	vms := []api.VM{{Name: "a", Labels: map[string]string{"team": "infra"}}, {Name: "b"}}
	if f := filterByLabels(vms, got); len(f) != 0 {
		t.Fatalf("filter on two labels kept %v", f)
	}
	if f := filterByLabels(vms, map[string]string{"team": "infra"}); len(f) != 1 || f[0].Name != "a" {
		t.Fatalf("filter kept %v", f)
	}
	if formatLabels(map[string]string{"b": "2", "a": "1"}) != "a=1, b=2" {
		t.Fatal("formatLabels is not sorted")
	}
}

func TestRunCopySpecs(t *testing.T) {
	if _, _, err := splitCopy("cp", "nocolon"); err == nil || !strings.Contains(err.Error(), "HOST:GUEST") {
		t.Fatalf("splitCopy: %v", err)
	}
	if h, g, err := splitCopy("out", "/var/log/x:./x"); err != nil || h != "/var/log/x" || g != "./x" {
		t.Fatalf("splitCopy = %q %q %v", h, g, err)
	}
	if err := checkRunCopies(runOptions{Inputs: []string{"/no/such/file:/x"}}); err == nil || !strings.Contains(err.Error(), "cannot copy /no/such/file") {
		t.Fatalf("missing input: %v", err)
	}
}
