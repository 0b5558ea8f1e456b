// Package imagescripts holds the shell tooling `banger image build` runs
// inside a new root file system (chroot), embedded so the daemon binary
// carries it. customize.sh is the entry point; the unit files are installed
// by it.
package imagescripts

import "embed"

// FS holds customize.sh and the systemd units it installs.
//
//go:embed customize.sh *.service
var FS embed.FS
