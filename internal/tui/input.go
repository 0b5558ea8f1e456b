package tui

import (
	"strings"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
)

// field is a one-line text input. bubbles' textinput would do, but it pulls
// in a clipboard module this build does not have; the editing a filter, a
// command line and a few form fields need is small.
type field struct {
	prompt      string
	placeholder string
	limit       int // max runes; 0 means none
	value       []rune
	pos         int
	focused     bool
	width       int // visible columns for the value; 0 means unbounded
	cursor      lipgloss.Style
	dim         lipgloss.Style
}

func newField(prompt, placeholder string, st styles) field {
	return field{prompt: prompt, placeholder: placeholder, cursor: lipgloss.NewStyle().Reverse(true), dim: st.dim}
}

func (f *field) Value() string { return string(f.value) }

func (f *field) Reset()          { f.value, f.pos = nil, 0 }
func (f *field) Focus()          { f.focused = true }
func (f *field) Blur()           { f.focused = false }
func (f *field) SetWidth(w int)  { f.width = w }
func (f *field) insert(s string) { f.insertRunes([]rune(s)) }

func (f *field) insertRunes(rs []rune) {
	clean := rs[:0:0]
	for _, r := range rs {
		if r == '\n' || r == '\t' {
			r = ' '
		}
		if !unicode.IsControl(r) {
			clean = append(clean, r)
		}
	}
	if f.limit > 0 {
		clean = clean[:max(0, min(len(clean), f.limit-len(f.value)))]
	}
	f.value = append(f.value[:f.pos:f.pos], append(clean, f.value[f.pos:]...)...)
	f.pos += len(clean)
}

// handleKey edits the value; it reports whether the key was an edit.
func (f *field) handleKey(msg tea.KeyPressMsg) bool {
	switch msg.String() {
	case "left", "ctrl+b":
		f.pos = max(0, f.pos-1)
	case "right", "ctrl+f":
		f.pos = min(len(f.value), f.pos+1)
	case "home", "ctrl+a":
		f.pos = 0
	case "end", "ctrl+e":
		f.pos = len(f.value)
	case "backspace", "ctrl+h":
		if f.pos > 0 {
			f.value = append(f.value[:f.pos-1], f.value[f.pos:]...)
			f.pos--
		}
	case "delete", "ctrl+d":
		if f.pos < len(f.value) {
			f.value = append(f.value[:f.pos], f.value[f.pos+1:]...)
		}
	case "ctrl+u":
		f.value = f.value[f.pos:]
		f.pos = 0
	case "ctrl+k":
		f.value = f.value[:f.pos]
	case "ctrl+w", "alt+backspace":
		i := f.pos
		for i > 0 && f.value[i-1] == ' ' {
			i--
		}
		for i > 0 && f.value[i-1] != ' ' {
			i--
		}
		f.value = append(f.value[:i], f.value[f.pos:]...)
		f.pos = i
	default:
		if msg.Text == "" || msg.Mod.Contains(tea.ModCtrl) || msg.Mod.Contains(tea.ModAlt) {
			return false
		}
		f.insert(msg.Text)
	}
	return true
}

// View draws the prompt and the value, scrolled so the cursor stays visible.
func (f *field) View() string {
	if len(f.value) == 0 {
		// The cursor sits on the placeholder's first letter, so focusing
		// a field does not shift its text.
		ph := []rune(f.placeholder)
		if !f.focused {
			return f.prompt + f.dim.Render(string(ph))
		}
		if len(ph) == 0 {
			return f.prompt + f.cursor.Render(" ")
		}
		return f.prompt + f.cursor.Render(string(ph[0])) + f.dim.Render(string(ph[1:]))
	}
	start := 0
	if f.width > 0 && f.pos >= f.width {
		start = f.pos - f.width + 1
	}
	end := len(f.value)
	if f.width > 0 {
		end = min(end, start+f.width)
	}
	var b strings.Builder
	b.WriteString(f.prompt)
	b.WriteString(string(f.value[start:min(f.pos, end)]))
	if f.focused {
		under := " "
		if f.pos < len(f.value) {
			under = string(f.value[f.pos])
		}
		b.WriteString(f.cursor.Render(under))
		if f.pos < end {
			b.WriteString(string(f.value[f.pos+1 : end]))
		}
	} else if f.pos < end {
		b.WriteString(string(f.value[f.pos:end]))
	}
	return b.String()
}
