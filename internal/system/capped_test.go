package system

import (
	"bytes"
	"testing"
)

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{max: 10}
	for _, chunk := range []string{"0123", "456789ab", "cdef", ""} {
		if n, err := b.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; a capped write must still report it all taken", chunk, n, err)
		}
	}
	if !bytes.Equal(b.Bytes(), []byte("0123456789")) || b.dropped != 6 {
		t.Fatalf("kept %q, dropped %d; want the first 10 bytes and 6 dropped", b.Bytes(), b.dropped)
	}
}
