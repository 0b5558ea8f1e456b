package agent

import "testing"

func TestCappedWriterKeepsHeadAndCounts(t *testing.T) {
	c := &CappedWriter{Limit: 5}
	for _, s := range []string{"abc", "defgh", "ij"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if c.Text() != "abcde" || !c.Cut() || c.Total() != 10 {
		t.Fatalf("kept %q, cut %v, total %d", c.Text(), c.Cut(), c.Total())
	}
	// A cut inside a multi-byte character does not leave half of it.
	u := &CappedWriter{Limit: 4}
	_, _ = u.Write([]byte("abcé"))
	if got := u.Text(); got != "abc" {
		t.Fatalf("cut UTF-8: %q", got)
	}
	// Uncut output keeps everything; invalid bytes the guest sent are
	// replaced, not passed on.
	w := &CappedWriter{Limit: 16}
	_, _ = w.Write([]byte("ok\xff"))
	if w.Cut() || w.Text() != "ok\uFFFD" {
		t.Fatalf("uncut: cut %v, %q", w.Cut(), w.Text())
	}
}
