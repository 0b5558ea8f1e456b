// Package unixmode converts between Unix mode bits (permissions plus
// setuid, setgid and sticky at 0o4000, 0o2000, 0o1000, as tar headers and
// banger's copy protocol carry them) and Go's fs.FileMode, which keeps the
// special bits elsewhere.
package unixmode

import "io/fs"

// ToFileMode turns Unix permission and special bits into a FileMode; other
// bits (the file type) are ignored.
func ToFileMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// FromFileMode is the inverse of ToFileMode.
func FromFileMode(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}
