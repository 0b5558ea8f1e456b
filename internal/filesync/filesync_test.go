package filesync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// home builds a home directory with the shapes the policy must handle.
func home(t *testing.T) string {
	t.Helper()
	h := filepath.Join(t.TempDir(), "home", "alice")
	mk := func(rel, content string) {
		p := filepath.Join(h, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		if err := os.Symlink(target, filepath.Join(h, rel)); err != nil {
			t.Fatal(err)
		}
	}
	mk(".gitconfig", "[user]\n")
	mk(".config/gh/hosts.yml", "github.com:\n")
	mk("dotfiles/vimrc", "set nu\n")
	link("dotfiles/vimrc", ".vimrc")               // inside: fine
	link("/", "rootlink")                          // to /
	link("/etc/passwd", ".passwdlink")             // to a file outside
	mk("proj/a.txt", "a")                          //
	link("../../../../etc", "proj/etc")            // a tree holding an outside link
	mk("proj2/b.txt", "b")                         //
	link("b.txt", "proj2/c")                       // a tree with an inside link
	link(filepath.Join(h, "missing"), ".dangling") // leads nowhere
	mk("../bob/.bashrc", "bob")                    // a neighbour
	link(filepath.Join(h, "..", "bob"), "bobs")    // into the neighbour's home
	return h
}

func TestPlanLocksToHome(t *testing.T) {
	h := home(t)
	tests := []struct {
		path    string
		wantRel string // "" means refused
		wantErr string
	}{
		{"~/.gitconfig", ".gitconfig", ""},
		{"~/.config/gh/", ".config/gh", ""},
		{".gitconfig", ".gitconfig", ""},
		{filepath.Join(h, ".gitconfig"), ".gitconfig", ""},
		{"~/.vimrc", ".vimrc", ""},
		{"~/proj2", "proj2", ""},
		{"/etc/passwd", "", "outside your home directory"},
		{"~/../x", "", `climbs out of your home directory`},
		{"~/proj/../../bob/.bashrc", "", `climbs out`},
		{"~/rootlink", "", "leads to /, outside your home directory"},
		{"~/.passwdlink", "", "leads to /etc/passwd, outside"},
		{"~/bobs/.bashrc", "", "outside your home directory"},
		{"~/proj", "", "a symlink to ../../../../etc outside your home directory"},
		{"~/.dangling", "", "leads nowhere"},
		{"~/nope", "", "does not exist"},
		{"~", "", "whole home directory"},
		{"~bob/.bashrc", "", "not another user's"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			entries, errs := Plan(h, []string{tt.path})
			if tt.wantRel != "" {
				if len(errs) != 0 || len(entries) != 1 || entries[0].Rel != tt.wantRel {
					t.Fatalf("entries %+v errs %v, want one entry at %s", entries, errs, tt.wantRel)
				}
				return
			}
			if len(entries) != 0 || len(errs) != 1 || !errors.Is(errs[0], ErrRefused) || !strings.Contains(errs[0].Error(), tt.wantErr) {
				t.Fatalf("entries %+v errs %v, want a refusal containing %q", entries, errs, tt.wantErr)
			}
			if !strings.HasPrefix(errs[0].Error(), "sync "+tt.path+": ") {
				t.Fatalf("refusal %q does not name the configured path", errs[0])
			}
		})
	}
}

func TestPlanResolvesSymlinkedFileButKeepsItsName(t *testing.T) {
	h := home(t)
	entries, errs := Plan(h, []string{"~/.vimrc", "~/.gitconfig", "/etc/passwd"})
	if len(entries) != 2 || len(errs) != 1 {
		t.Fatalf("entries %+v errs %v", entries, errs)
	}
	real, _ := filepath.EvalSymlinks(filepath.Join(h, "dotfiles/vimrc"))
	if e := entries[0]; e.Rel != ".vimrc" || e.Source != real || e.Config != "~/.vimrc" {
		t.Fatalf("entry %+v, want source %s at .vimrc", e, real)
	}
}

func TestPlanWithUnusableHome(t *testing.T) {
	_, errs := Plan("relative/home", []string{"~/.x"})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "home directory") {
		t.Fatalf("errs %v", errs)
	}
}
