package mcp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestHostRootRefusesEscapes(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "in.txt"), []byte("x"), 0o600))
	must(os.Mkdir(filepath.Join(root, "dir"), 0o700))
	must(os.Symlink(outside, filepath.Join(root, "out-link")))
	must(os.Symlink(filepath.Join(root, "in.txt"), filepath.Join(root, "in-link")))
	must(os.Symlink(filepath.Join(outside, "nowhere"), filepath.Join(root, "dangling")))
	r, err := newHostRoot(root)
	must(err)

	for _, p := range []string{"in.txt", "in-link", "dir", filepath.Join(root, "in.txt"), "dir/../in.txt"} {
		if _, err := r.existing(p); err != nil {
			t.Errorf("existing(%q): %v", p, err)
		}
	}
	for _, p := range []string{"../x", "/etc/passwd", "out-link", "out-link/f", "dir/../../x"} {
		if _, err := r.existing(p); err == nil || !strings.Contains(err.Error(), "outside") && !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("existing(%q) = %v, want a refusal", p, err)
		}
	}
	for p, want := range map[string]string{"new.txt": "new.txt", "dir": "dir/base", "dir/new": "dir/new"} {
		got, err := r.destination(p, "base")
		if err != nil || got != filepath.Join(r.dir, want) {
			t.Errorf("destination(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	for p, want := range map[string]string{
		"in.txt": "already exists", "in-link": "already exists", "dangling": "symlink to nowhere",
		"out-link": "outside", "out-link/new": "outside", "../new": "outside", "missing/new": "does not exist",
	} {
		if _, err := r.destination(p, "base"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("destination(%q) = %v, want %q", p, err, want)
		}
	}
	if _, err := r.destination("dir", ".."); err == nil {
		t.Errorf("destination into a directory under the name .. was allowed")
	}
}

func TestParseFindSkipsGarbage(t *testing.T) {
	out := "f\t3\t640\t1700000000.5\ta.txt\x00d\t4096\t755\t1700000000\tsub\x00garbage\x00l\t7\t777\t0\tlink\twith\ttabs\x00"
	got := parseFind(out)
	if len(got) != 3 || got[0].Name != "a.txt" || got[0].Type != "file" || got[0].Mode != "0640" || got[0].Size != 3 ||
		got[1].Type != "dir" || got[2].Name != "link\twith\ttabs" || got[2].Type != "symlink" {
		t.Fatalf("parseFind = %+v", got)
	}
}

func TestExecRequestChecks(t *testing.T) {
	s := &Server{opts: Options{Limits: Limits{}.withDefaults()}}
	for _, tc := range []struct {
		in   ExecArgs
		want string
	}{
		{ExecArgs{}, "no command given"},
		{ExecArgs{Argv: []string{"true"}, Command: "true"}, "not both"},
		{ExecArgs{Argv: []string{"true"}, Env: []string{"NOEQ"}}, "NAME=VALUE"},
		{ExecArgs{Argv: []string{"true"}, TimeoutSeconds: -1}, "timeout_seconds"},
		{ExecArgs{Argv: []string{"true"}, TimeoutSeconds: 1 << 20}, "timeout_seconds"},
		{ExecArgs{Argv: []string{"true"}, MaxOutputBytes: 1 << 30}, "max_output_bytes"},
		{ExecArgs{Argv: []string{"true"}, StdinBase64: "!!"}, "not valid base64"},
	} {
		if _, _, _, _, err := s.execRequest(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.in, err, tc.want)
		}
	}
	req, stdin, _, limit, err := s.execRequest(ExecArgs{Command: "echo hi", StdinBase64: "AAE=", Cwd: "/tmp"})
	if err != nil || strings.Join(req.Argv, " ") != "sh -c echo hi" || string(stdin) != "\x00\x01" || req.Dir != "/tmp" || limit != defaultExecOutputBytes {
		t.Fatalf("execRequest = %+v %q %d %v", req, stdin, limit, err)
	}
}

func TestToolErrorCarriesHint(t *testing.T) {
	err := toolError(api.Errorf(api.CodeNotFound, "no image named %q", "x").WithHint("`banger image list` shows images"))
	if err.Error() != "no image named \"x\"\nhint: `banger image list` shows images" {
		t.Fatalf("toolError = %q", err)
	}
}
