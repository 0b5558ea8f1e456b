// Package termtext makes text from an untrusted source — a guest, reaching
// the user through the daemon — safe to print on a terminal. A guest can put
// anything in its agent version, its serial console, an error or a file
// name; printed raw, escape sequences in it could write to the clipboard
// (OSC 52), retitle the window, or move the cursor and print a fake
// "done" over a real failure. Every function here writes such characters as
// visible escapes instead of deleting them, so the user sees that something
// was there: ESC becomes \x1b, CR becomes \r, a C1 control U+009B becomes
// \u009b, a bidi override U+202E becomes \u202e and a byte that is not
// UTF-8 becomes \xff. Plain text, including non-ASCII letters, is unchanged.
package termtext

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Escape makes a message safe to print: every character a terminal would act
// on is written as a visible escape. Newlines and tabs are kept, so a
// multi-line message (an error ending in a serial-console tail) stays
// multi-line; use Line for a one-line field.
func Escape(s string) string {
	return escape(s, func(r rune) bool { return r == '\n' || r == '\t' })
}

// Line is Escape for a one-line field (a table cell, a progress line, a
// name): newlines and tabs are escaped too, so the field cannot break the
// layout or start a line of its own that looks like banger's.
func Line(s string) string {
	return escape(s, func(rune) bool { return false })
}

// Short is Line for at most n runes of s, marked with "…" when cut: the way
// to quote untrusted text of any length in a one-line message.
func Short(s string, n int) string {
	runes := 0
	for i := range s {
		if runes == n {
			return Line(s[:i]) + "…"
		}
		runes++
	}
	return Line(s)
}

// Console is Escape for a guest's serial-console output: the CR of each CRLF
// line end is dropped and colour (SGR) sequences, which a booting guest
// prints on every line, are removed; every other control character,
// including a lone CR and any other escape sequence, is escaped.
func Console(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return Escape(dropSGR(s))
}

// JSON rewrites encoded JSON so it is safe to print: encoding/json already
// escapes C0 controls and U+2028/U+2029 and replaces invalid UTF-8, but
// leaves DEL, the C1 controls and bidi controls as literal characters, which
// a terminal may act on. Those become \u escapes; the JSON value is the same.
// They can only occur inside strings, so the result stays valid JSON.
func JSON(b []byte) []byte {
	// C0 controls in encoded JSON are its own newlines and indentation.
	literal := func(r rune) bool { return r >= 0x20 && unsafeRune(r) }
	if !bytes.ContainsFunc(b, literal) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if literal(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

// unsafeRune reports whether a terminal may act on r instead of showing it:
// C0 controls, DEL, C1 controls, the line and paragraph separators, and the
// bidi embeddings, overrides and isolates (which reorder what is shown).
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// escape writes s with every unsafe rune that keep does not allow, and every
// byte that is not UTF-8, as a visible escape.
func escape(s string, keep func(rune) bool) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return unsafeRune(r) && !keep(r) }) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafeRune(r) || keep(r):
			b.WriteString(s[i : i+size])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// dropSGR removes complete colour sequences (ESC [ digits and separators m)
// and leaves every other sequence for Escape to show.
func dropSGR(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.Index(s, "\x1b[")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		j := i + 2
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == ';' || s[j] == ':') {
			j++
		}
		if j < len(s) && s[j] == 'm' {
			s = s[j+1:] // a colour change: drop it
			continue
		}
		b.WriteString(s[i:j]) // not a colour: keep it for Escape
		s = s[j:]
	}
}
