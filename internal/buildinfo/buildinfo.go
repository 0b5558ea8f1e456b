// Package buildinfo holds the version stamp injected at link time and the
// one formatter every binary uses to print it.
//
// make build sets the three variables with
//
//	-ldflags "-X github.com/banger-dev/banger/internal/buildinfo.version=v0.1.0 ..."
//
// Unstamped builds (go test, go run) report "dev" and "unknown".
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Link-time stamps. They are variables only because -X can set nothing else;
// read them through Current.
var (
	version = ""
	commit  = ""
	builtAt = ""
)

// Unstamped values, reported when the linker did not inject a stamp.
const (
	DevVersion = "dev"
	Unknown    = "unknown"
)

// Info identifies one build of banger.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	BuiltAt string `json:"built_at"`
}

// Current returns this binary's stamp, falling back to the Go toolchain's VCS
// stamp for the commit when the linker did not set one.
func Current() Info {
	info := Info{Version: version, Commit: commit, BuiltAt: builtAt}
	if info.Version == "" {
		info.Version = DevVersion
	}
	if info.Commit == "" {
		info.Commit = vcsRevision()
	}
	if info.BuiltAt == "" {
		info.BuiltAt = Unknown
	}
	return info
}

func vcsRevision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return Unknown
}

// ShortCommit is the first eight characters of the commit, or the whole
// value when it is shorter (e.g. "unknown").
func (i Info) ShortCommit() string {
	if len(i.Commit) > 8 && i.Commit != Unknown {
		return i.Commit[:8]
	}
	return i.Commit
}

// Line is the one-line version sentence for program, e.g.
// "banger v0.1.0 (commit abcd1234, built 2026-04-28T20:45:50Z)".
func (i Info) Line(program string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s)", program, i.Version, i.ShortCommit(), i.BuiltAt)
}

// IsDev reports whether this build carries no real version or commit, in
// which case drift checks against it mean nothing.
func (i Info) IsDev() bool {
	return isUnset(i.Version) || isUnset(i.Commit)
}

// SameBuild reports whether two stamps name the same build. The daemon and CLI
// compare these to detect a stale daemon after a rebuild.
func (i Info) SameBuild(o Info) bool {
	return i.Version == o.Version && i.Commit == o.Commit && i.BuiltAt == o.BuiltAt
}

func isUnset(s string) bool {
	return s == "" || s == DevVersion || s == Unknown
}
