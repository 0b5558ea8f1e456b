package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// This file is `banger config get/set/unset`: values by dotted key, and
// edits of one key in a TOML file that keep the rest of the file — the
// person's comments and order — as it was.

// walkLeaves calls fn for every non-table key of Config.
func walkLeaves(fn func(key string, t reflect.Type)) {
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := prefix + strings.Split(f.Tag.Get("toml"), ",")[0]
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, key+".")
				continue
			}
			fn(key, f.Type)
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

func keyType(key string) (reflect.Type, bool) {
	var found reflect.Type
	walkLeaves(func(k string, t reflect.Type) {
		if k == key {
			found = t
		}
	})
	return found, found != nil
}

func unknownKey(key string) error {
	return fmt.Errorf("unknown key %q; run `banger config defaults` to see every key", key)
}

// Get returns key's value in c: a string as it is ("4G", "auto"), anything
// else as TOML writes it ("4", "['~/.gitconfig']").
func (c Config) Get(key string) (string, error) {
	if _, ok := keyType(key); !ok {
		return "", unknownKey(key)
	}
	b, err := toml.Marshal(c)
	if err != nil {
		return "", err
	}
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return "", err
	}
	flat := map[string]any{}
	flatten("", doc, flat)
	v, ok := flat[key]
	if !ok { // an empty list is left out
		return "[]", nil
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	return renderValue(v)
}

// renderValue writes v as a TOML value.
func renderValue(v any) (string, error) {
	b, err := toml.Marshal(map[string]any{"v": v})
	if err != nil {
		return "", err
	}
	_, val, _ := strings.Cut(strings.TrimSpace(string(b)), "=")
	return strings.TrimSpace(val), nil
}

// ParseValue turns the words a person typed after `config set KEY` into
// key's TOML value: one word for a scalar, any number for a list.
func ParseValue(key string, words []string) (any, error) {
	t, ok := keyType(key)
	if !ok {
		return nil, unknownKey(key)
	}
	if t.Kind() == reflect.Slice {
		return append([]string{}, words...), nil
	}
	if len(words) != 1 {
		return nil, fmt.Errorf("key %q takes one value, got %d", key, len(words))
	}
	w := words[0]
	if u, ok := reflect.New(t).Interface().(encoding.TextUnmarshaler); ok {
		if err := u.UnmarshalText([]byte(w)); err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		return w, nil
	}
	switch t.Kind() {
	case reflect.String:
		return w, nil
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(w, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("key %q takes a whole number, got %q", key, w)
		}
		return n, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(w)
		if err != nil {
			return nil, fmt.Errorf("key %q takes true or false, got %q", key, w)
		}
		return b, nil
	}
	return nil, fmt.Errorf("key %q cannot be set from the command line", key)
}

// ErrCannotEdit means a file's layout (a multi-line value, dotted keys or
// inline tables) keeps SetKey from changing one key without touching the rest.
var ErrCannotEdit = errors.New("cannot change this key without rewriting the file")

// SetKey returns data with key set to value (from ParseValue), everything
// else kept byte for byte.
func SetKey(data []byte, key string, value any) ([]byte, error) {
	text, err := renderValue(value)
	if err != nil {
		return nil, err
	}
	table, leaf := splitKey(key)
	lines := splitLines(data)
	line := leaf + " = " + text
	start, end, found := tableRegion(lines, table)
	if i := findKey(lines[start:end], leaf); i >= 0 {
		lines[start+i] = line
	} else if found || table == "" {
		lines = insertAt(lines, lastContent(lines, start, end), line)
	} else {
		if len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) != "" {
			lines = append(lines, "")
		}
		lines = append(lines, "["+table+"]", line)
	}
	out := joinLines(lines)
	return out, checkEdit(data, out, key, true)
}

// UnsetKey returns data without key (the default, or root's value, applies
// again); data is returned unchanged when it does not set key.
func UnsetKey(data []byte, key string) ([]byte, error) {
	if _, ok := keyType(key); !ok {
		return nil, unknownKey(key)
	}
	table, leaf := splitKey(key)
	lines := splitLines(data)
	start, end, _ := tableRegion(lines, table)
	i := findKey(lines[start:end], leaf)
	if i < 0 {
		return data, checkEdit(data, data, key, false)
	}
	lines = append(lines[:start+i], lines[start+i+1:]...)
	out := joinLines(lines)
	return out, checkEdit(data, out, key, false)
}

// checkEdit verifies an edit changed key alone: the line-based edit is
// right for the files people write, and this refuses the rest.
func checkEdit(before, after []byte, key string, wantSet bool) error {
	old, err := flatDoc(before)
	if err != nil {
		return err
	}
	now, err := flatDoc(after)
	if err != nil {
		return ErrCannotEdit
	}
	_, has := now[key]
	delete(old, key)
	if has != wantSet {
		return ErrCannotEdit
	}
	delete(now, key)
	if !reflect.DeepEqual(old, now) {
		return ErrCannotEdit
	}
	return nil
}

func flatDoc(data []byte) (map[string]any, error) {
	var doc map[string]any
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, describeDecodeError(err)
	}
	flat := map[string]any{}
	flatten("", doc, flat)
	return flat, nil
}

func splitKey(key string) (table, leaf string) {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

func splitLines(data []byte) []string {
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func joinLines(lines []string) []byte {
	if len(lines) == 0 {
		return nil
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// tableHeader returns the table a "[name]" line opens.
func tableHeader(line string) (string, bool) {
	t := strings.TrimSpace(line)
	if i := strings.IndexByte(t, '#'); i >= 0 {
		t = strings.TrimSpace(t[:i])
	}
	if !strings.HasPrefix(t, "[") || strings.HasPrefix(t, "[[") || !strings.HasSuffix(t, "]") {
		return "", false
	}
	return strings.TrimSpace(t[1 : len(t)-1]), true
}

// tableRegion is the line range [start, end) holding table's keys (the
// top-level keys before the first header for ""), and whether the table
// has a header.
func tableRegion(lines []string, table string) (start, end int, found bool) {
	start = -1
	if table == "" {
		start = 0
		found = true
	}
	for i, l := range lines {
		name, ok := tableHeader(l)
		if !ok {
			continue
		}
		if start >= 0 {
			return start, i, found
		}
		if name == table {
			start, found = i+1, true
		}
	}
	if start < 0 {
		return len(lines), len(lines), false
	}
	return start, len(lines), found
}

// findKey returns the index of the line setting leaf, or -1.
func findKey(lines []string, leaf string) int {
	for i, l := range lines {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), leaf)
		if ok && strings.HasPrefix(strings.TrimSpace(rest), "=") {
			return i
		}
	}
	return -1
}

// lastContent is where a new key goes in [start, end): after the region's
// last non-blank line, so blank lines before the next table stay there.
func lastContent(lines []string, start, end int) int {
	at := start
	for i := start; i < end; i++ {
		if strings.TrimSpace(lines[i]) != "" {
			if _, header := tableHeader(lines[i]); !header {
				at = i + 1
			}
		}
	}
	return at
}

func insertAt(lines []string, i int, line string) []string {
	lines = append(lines, "")
	copy(lines[i+1:], lines[i:])
	lines[i] = line
	return lines
}
