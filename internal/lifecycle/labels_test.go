package lifecycle

import (
	"strings"
	"testing"
)

func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range maxLabels + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string // "" means valid
	}{
		{"none", nil, ""},
		{"creator", map[string]string{"creator": "mcp:claude", "banger.dev/team": "a b"}, ""},
		{"empty value", map[string]string{"flag": ""}, ""},
		{"uppercase key", map[string]string{"Team": "x"}, `invalid label key "Team"`},
		{"empty key", map[string]string{"": "x"}, `invalid label key ""`},
		{"leading dash", map[string]string{"-x": "x"}, `invalid label key "-x"`},
		{"long key", map[string]string{strings.Repeat("k", 64): "x"}, "invalid label key"},
		{"control in value", map[string]string{"k": "a\x1b[2Jb"}, "non-printable"},
		{"newline in value", map[string]string{"k": "a\nb"}, "non-printable"},
		{"long value", map[string]string{"k": strings.Repeat("v", 257)}, "use at most 256"},
		{"too many", many, "at most 32"},
	} {
		err := ValidateLabels(tc.labels)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseLabel(t *testing.T) {
	if k, v, err := ParseLabel("owner=me=you"); err != nil || k != "owner" || v != "me=you" {
		t.Errorf("ParseLabel = %q %q %v", k, v, err)
	}
	if _, _, err := ParseLabel("novalue"); err == nil || !strings.Contains(err.Error(), "use KEY=VALUE") {
		t.Errorf("ParseLabel(novalue) = %v", err)
	}
}
