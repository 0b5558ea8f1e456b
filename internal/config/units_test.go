package config

import (
	"math"
	"testing"
)

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:                   "0B",
		100:                 "100B",
		1023:                "1023B",
		1024:                "1K",
		1537:                "1.5K",
		4 << 30:             "4G",
		1536 << 20:          "1.5G",
		1536<<20 + 1:        "1.5G",
		64 << 20:            "64M",
		3 << 40:             "3T",
		-(2 << 20):          "-2M",
		math.MinInt64:       "-9223372036854775808B",
		1<<40 + 300<<30 + 1: "1.3T",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestByteSizeTextRoundTrips: what MarshalText writes parses back to the
// same size, exact or not.
func TestByteSizeTextRoundTrips(t *testing.T) {
	for _, n := range []ByteSize{0, 100, 1024, 1537, 4 << 30, 1536 << 20, 1536<<20 + 1} {
		text, err := n.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back ByteSize
		if err := back.UnmarshalText(text); err != nil || back != n {
			t.Errorf("%d marshals to %q, which reads back as %d (%v)", n, text, back, err)
		}
	}
	if text, _ := ByteSize(1536 << 20).MarshalText(); string(text) != "1536M" {
		t.Errorf("1536M marshals to %q", text)
	}
}
