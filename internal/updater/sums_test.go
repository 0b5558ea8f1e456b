package updater

import (
	"strings"
	"testing"
)

const h1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
const h2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

func TestParseSHA256SUMS(t *testing.T) {
	good := h1 + "  banger_0.2.0_linux_amd64.tar.gz\n" + h2 + " *banger_0.2.0_linux_arm64.tar.gz\n"
	sums, err := ParseSHA256SUMS([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := sums.Lookup("banger_0.2.0_linux_amd64.tar.gz"); !ok || s != h1 {
		t.Fatalf("amd64 = %q, %v", s, ok)
	}
	if s, ok := sums.Lookup("banger_0.2.0_linux_arm64.tar.gz"); !ok || s != h2 {
		t.Fatalf("arm64 (binary mode) = %q, %v", s, ok)
	}
	if _, ok := sums.Lookup("other"); ok {
		t.Fatal("lookup of an unlisted name succeeded")
	}

	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"no final newline", h1 + "  a", "does not end with a newline"},
		{"blank line", h1 + "  a\n\n", "line 2 is too short"},
		{"CRLF", h1 + "  a\r\n", "not a plain file name"},
		{"uppercase hex", strings.ToUpper(h1) + "  a\n", "64 lowercase hex"},
		{"short hash", h1[:63] + "  abc\n", "64 lowercase hex"},
		{"one space", h1 + " abc\n", "separated by two spaces"},
		{"tab", h1 + "\tabc\n", "separated by two spaces"},
		{"path", h1 + "  dir/a\n", "not a plain file name"},
		{"dot-dot", h1 + "  ..\n", "not a plain file name"},
		{"escaped name", "\\" + h1 + "  a\\nb\n", "64 lowercase hex"},
		{"space in name", h1 + "  a b\n", "not a plain file name"},
		{"duplicate", h1 + "  a\n" + h2 + "  a\n", `lists "a" twice`},
		{"too large", strings.Repeat(h1+"  a\n", 1000), "more than the 65536 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSHA256SUMS([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzParseSHA256SUMS checks that whatever the parser accepts is exactly
// what it promises: plain names, lowercase 64-hex sums, and a re-rendering
// that parses to the same thing.
func FuzzParseSHA256SUMS(f *testing.F) {
	f.Add([]byte(h1 + "  banger_0.2.0_linux_amd64.tar.gz\n"))
	f.Add([]byte(h1 + " *a\n" + h2 + "  b\n"))
	f.Add([]byte(h1 + "  ../etc/passwd\n"))
	f.Add([]byte(""))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseSHA256SUMS(data)
		if err != nil {
			if sums != nil {
				t.Fatal("error with a non-nil result")
			}
			return
		}
		if len(sums) == 0 {
			t.Fatal("accepted input with no entries")
		}
		var rendered strings.Builder
		for name, sum := range sums {
			if !validFileName(name) || strings.ContainsAny(name, "/\\\x00\n\r ") {
				t.Fatalf("accepted name %q", name)
			}
			if len(sum) != 64 || !isLowerHex([]byte(sum)) {
				t.Fatalf("accepted sum %q", sum)
			}
			rendered.WriteString(sum + "  " + name + "\n")
		}
		again, err := ParseSHA256SUMS([]byte(rendered.String()))
		if err != nil || len(again) != len(sums) {
			t.Fatalf("re-rendered input does not parse back: %v", err)
		}
		for k, v := range sums {
			if again[k] != v {
				t.Fatalf("round trip changed %q", k)
			}
		}
	})
}
