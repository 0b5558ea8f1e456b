package lifecycle

import (
	"regexp"
	"strings"
	"unicode"
)

// Label limits: labels are tags for finding and owning VMs, not storage.
const (
	maxLabels          = 32
	maxLabelValueBytes = 256
)

// labelKeyPattern is the rule for label keys: short, lowercase, with the
// separators tools use for namespaced keys ("banger.dev/creator").
var labelKeyPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,62})$`)

// ValidateLabels is the one rule for VM labels: at most 32, keys of 1-63
// lowercase letters, digits and ". _ / -" starting with a letter or digit,
// values of at most 256 bytes of printable text.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return Errorf(Invalid, "%d labels given; a VM takes at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		if !labelKeyPattern.MatchString(k) {
			return Errorf(Invalid, "invalid label key %q: use 1-63 lowercase letters, digits and . _ / -, starting with a letter or digit", k)
		}
		if len(v) > maxLabelValueBytes {
			return Errorf(Invalid, "label %q: value is %d bytes; use at most %d", k, len(v), maxLabelValueBytes)
		}
		if strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return Errorf(Invalid, "label %q: value has control or non-printable characters; use plain text", k)
		}
	}
	return nil
}

// ParseLabel splits "KEY=VALUE" (as `vm create --label` takes it) and
// checks it against the label rule.
func ParseLabel(kv string) (string, string, error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return "", "", Errorf(Invalid, "label %q: use KEY=VALUE", kv)
	}
	if err := ValidateLabels(map[string]string{k: v}); err != nil {
		return "", "", err
	}
	return k, v, nil
}
