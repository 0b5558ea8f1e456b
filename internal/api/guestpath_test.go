package api

import "testing"

func TestGuestPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "~", "~": "~", "/etc/x": "/etc/x", "~/a": "~/a", "src/a": "~/src/a", ".bashrc": "~/.bashrc",
	} {
		if got := GuestPath(in); got != want {
			t.Errorf("GuestPath(%q) = %q, want %q", in, got, want)
		}
	}
}
