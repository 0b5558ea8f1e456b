package termtext

import (
	"encoding/json"
	"testing"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain text unchanged", "vm \"dev\" is running: 2 vCPUs, ünïcödé ✓", "vm \"dev\" is running: 2 vCPUs, ünïcödé ✓"},
		{"newlines and tabs kept", "boot failed\nserial tail:\n\t[ 0.1] panic", "boot failed\nserial tail:\n\t[ 0.1] panic"},
		{"OSC 52 clipboard write", "v1\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07", `v1\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07`},
		{"OSC title change", "\x1b]0;pwned\x1b\\agent", `\x1b]0;pwned\x1b\agent`},
		{"CSI cursor movement", "error\x1b[1A\x1b[2Kok", `error\x1b[1A\x1b[2Kok`},
		{"CR overwrite", "copy failed: disk full\rcopy complete          ", `copy failed: disk full\rcopy complete          `},
		{"C1 CSI and NEL", "a\u009b31mb\u0085c", `a\u009b31mb\u0085c`},
		{"DEL and BEL", "x\x7fy\x07", `x\x7fy\x07`},
		{"bidi override and isolate", "file\u202egpj.sh and \u2066x\u2069", `file\u202egpj.sh and \u2066x\u2069`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid UTF-8", "ok\xff\xc3(", `ok\xff\xc3(`},
		{"a real replacement character stays", "bad byte: \ufffd", "bad byte: \ufffd"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLineEscapesNewlinesAndTabs(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                    "v1.2.3",
		"v1\nbanger: vm ready":      `v1\nbanger: vm ready`,
		"name\twith\ttabs":          `name\twith\ttabs`,
		"v9\r\x1b]0;title\x07":      `v9\r\x1b]0;title\x07`,
		"\u202eadmin\u202c":         `\u202eadmin\u202c`,
		"caf\xe9":                   `caf\xe9`,
		"already escaped? \\x1b ok": "already escaped? \\x1b ok",
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConsole(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"CRLF line ends become LF", "[    0.0] Linux\r\n[    0.4] virtio\r\n", "[    0.0] Linux\n[    0.4] virtio\n"},
		{"colours dropped", "\x1b[0;32m[  OK  ]\x1b[0m Started \x1b[0;1;39magent\x1b[0m.", "[  OK  ] Started agent."},
		{"lone CR escaped", "progress 10%\rprogress 100%\r\n", `progress 10%\rprogress 100%` + "\n"},
		{"other CSI escaped", "a\x1b[2J\x1b[Hb", `a\x1b[2J\x1b[Hb`},
		{"OSC 52 escaped", "\x1b]52;c;ZXZpbA==\x07", `\x1b]52;c;ZXZpbA==\x07`},
		{"unterminated CSI escaped", "tail\x1b[12", `tail\x1b[12`},
		{"tabs kept", "\tDebian ttyS0", "\tDebian ttyS0"},
		{"C1 CSI escaped", "\u009b2J", `\u009b2J`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Console(tt.in); got != tt.want {
				t.Errorf("Console(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestJSON checks what encoding/json does with hostile strings on its own
// and that JSON escapes the rest while keeping the value.
func TestJSON(t *testing.T) {
	in := map[string]string{
		"c0":     "a\x1b]52;c;ZXZpbA==\x07\r\n",
		"c1":     "b\u009b31m\u0085",
		"del":    "c\x7f",
		"bidi":   "d\u202e\u2066",
		"sep":    "e\u2028\u2029",
		"binary": "f\xff",
		"plain":  "ünïcödé <tag>",
	}
	raw, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	safe := JSON(raw)
	for i, b := range safe {
		if b == 0x7f || b < 0x20 && b != '\n' {
			t.Fatalf("byte %#x at %d left in %s", b, i, safe)
		}
	}
	for _, r := range string(safe) {
		if r >= 0x80 && unsafeRune(r) {
			t.Fatalf("rune %U left in %s", r, safe)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(safe, &back); err != nil {
		t.Fatalf("not valid JSON any more: %v\n%s", err, safe)
	}
	for k, v := range in {
		want := v
		if k == "binary" {
			want = "f\ufffd" // encoding/json's own replacement of invalid UTF-8
		}
		if back[k] != want {
			t.Errorf("%s: %q after the round trip, want %q", k, back[k], want)
		}
	}
	if plain := []byte(`{"a": "b"}`); &JSON(plain)[0] != &plain[0] {
		t.Error("clean JSON was copied")
	}
}

func TestShortCutsAndEscapes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"héllo\x1b[2J", 3, "hél…"},
		{"ok\r", 10, `ok\r`},
		{"exact", 5, "exact"},
		{"", 3, ""},
	} {
		if got := Short(tc.in, tc.n); got != tc.want {
			t.Errorf("Short(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
