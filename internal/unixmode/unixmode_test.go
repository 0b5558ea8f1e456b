package unixmode

import (
	"io/fs"
	"testing"
)

func TestModeBitsRoundTrip(t *testing.T) {
	for _, m := range []uint32{0o644, 0o4755, 0o2750, 0o1777, 0o7777, 0} {
		if got := FromFileMode(ToFileMode(m)); got != m {
			t.Errorf("mode %o came back as %o", m, got)
		}
	}
	if got := ToFileMode(0o104755); got != fs.ModeSetuid|0o755 {
		t.Errorf("file type bits were not ignored: %v", got)
	}
}
