package config

import "testing"

func TestFingerprintFollowsValuesNotSpelling(t *testing.T) {
	base := Default()
	spelled := Default()
	if err := Parse([]byte("# a comment\n[vm]\nvcpus = 2 # the default, spelled out\n"), &spelled); err != nil {
		t.Fatal(err)
	}
	if base.Fingerprint() != spelled.Fingerprint() {
		t.Fatal("a comment and a spelled-out default changed the fingerprint")
	}
	changed := Default()
	if err := Parse([]byte("[vm]\nvcpus = 3\n"), &changed); err != nil {
		t.Fatal(err)
	}
	if changed.Fingerprint() == base.Fingerprint() {
		t.Fatal("vm.vcpus = 3 kept the default's fingerprint")
	}
	if len(base.Fingerprint()) != 16 {
		t.Fatalf("fingerprint %q: want 16 hex digits", base.Fingerprint())
	}
}
