package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/paths"
)

func TestNetworkToRemoveOnlyBangersOwnBridge(t *testing.T) {
	layout := paths.Layout{Mode: paths.ModeUser, ConfigDir: t.TempDir()}
	writeConfig := func(body string) {
		if err := os.WriteFile(layout.ConfigFile(), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host := func(euid int, links ...string) systemHost {
		return systemHost{
			euid: func() int { return euid },
			linkExists: func(name string) bool {
				for _, l := range links {
					if l == name {
						return true
					}
				}
				return false
			},
		}
	}
	for _, tt := range []struct {
		name       string
		config     string
		hasState   bool
		h          systemHost
		bridge     string
		noteSubstr string
	}{
		{"banger made it", "[network]\nbridge = \"banger7\"\n", true, host(0, "banger7"), "banger7", ""},
		{"configured name, other bridge present", "[network]\nbridge = \"banger7\"\n", true, host(0, "banger0"), "", ""},
		{"networking off", "[network]\nenabled = \"off\"\n", true, host(0, "banger0"), "", ""},
		{"no state: banger never ran here", "", false, host(0, "banger0"), "", ""},
		{"not root", "", true, host(1000, "banger0"), "", "removing it needs root"},
		{"broken config", "[network]\nbridg = 1\n", true, host(0, "banger0"), "", "leaving the network alone"},
	} {
		writeConfig(tt.config)
		bridge, note := networkToRemove(layout, tt.hasState, tt.h)
		if bridge != tt.bridge || (tt.noteSubstr == "") != (note == "") || !strings.Contains(note, tt.noteSubstr) {
			t.Errorf("%s: bridge %q note %q, want %q and a note containing %q", tt.name, bridge, note, tt.bridge, tt.noteSubstr)
		}
	}
}

func TestIsBangerBinary(t *testing.T) {
	self, err := os.Executable() // this test binary is built from banger's module
	if err != nil {
		t.Fatal(err)
	}
	if !isBangerBinary(self) {
		t.Errorf("%s: not recognised as banger's", self)
	}
	script := filepath.Join(t.TempDir(), "bangerd")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if isBangerBinary(script) {
		t.Error("a shell script named bangerd counted as banger's")
	}
	if sh, err := filepath.EvalSymlinks("/bin/sh"); err == nil && isBangerBinary(sh) {
		t.Errorf("%s counted as banger's", sh)
	}
}
