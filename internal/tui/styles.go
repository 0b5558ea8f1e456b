package tui

import (
	"charm.land/lipgloss/v2"

	"github.com/banger-dev/banger/internal/api"
)

// styles holds every style the views use, built once for color or
// NO_COLOR. Without color, emphasis falls back to bold and reverse video so
// the selection and errors stay visible on any terminal.
type styles struct {
	noColor bool

	header    lipgloss.Style
	tab       lipgloss.Style
	tabActive lipgloss.Style
	colHead   lipgloss.Style
	selected  lipgloss.Style
	dim       lipgloss.Style
	label     lipgloss.Style
	err       lipgloss.Style
	ok        lipgloss.Style
	warn      lipgloss.Style
	key       lipgloss.Style
	rule      lipgloss.Style
	box       lipgloss.Style
	prompt    lipgloss.Style
	states    map[api.VMState]lipgloss.Style
}

func newStyles(noColor bool) styles {
	s := styles{noColor: noColor}
	plain := lipgloss.NewStyle()
	s.header = plain.Bold(true)
	s.tab = plain
	s.tabActive = plain.Bold(true).Reverse(true)
	s.colHead = plain.Bold(true)
	s.selected = plain.Reverse(true)
	s.dim = plain
	s.label = plain.Bold(true)
	s.err = plain.Bold(true)
	s.ok = plain
	s.warn = plain.Bold(true)
	s.key = plain.Bold(true)
	s.rule = plain
	s.box = plain.Border(lipgloss.RoundedBorder()).Padding(0, 1)
	s.prompt = plain.Bold(true)
	s.states = map[api.VMState]lipgloss.Style{}
	if noColor {
		s.states[api.VMFailed] = plain.Bold(true)
		s.states[api.VMPaused] = plain.Italic(true)
		return s
	}
	s.dim = plain.Foreground(lipgloss.Color("8"))
	s.rule = s.dim
	s.label = plain.Foreground(lipgloss.Color("6"))
	s.err = plain.Bold(true).Foreground(lipgloss.Color("1"))
	s.ok = plain.Foreground(lipgloss.Color("2"))
	s.warn = plain.Foreground(lipgloss.Color("3"))
	s.key = plain.Bold(true).Foreground(lipgloss.Color("6"))
	s.selected = plain.Reverse(true).Bold(true)
	s.box = s.box.BorderForeground(lipgloss.Color("6"))
	s.tabActive = plain.Bold(true).Foreground(lipgloss.Color("0")).Background(lipgloss.Color("6"))
	s.prompt = plain.Bold(true).Foreground(lipgloss.Color("3"))
	s.states[api.VMRunning] = s.ok
	s.states[api.VMFailed] = s.err
	s.states[api.VMStopped] = s.dim
	// Paused is neither up nor down: its own color, so a frozen VM is
	// not mistaken for a running one at a glance.
	s.states[api.VMPaused] = plain.Foreground(lipgloss.Color("4"))
	for _, st := range []api.VMState{api.VMCreating, api.VMStarting, api.VMStopping, api.VMDeleting} {
		s.states[st] = s.warn
	}
	return s
}

// stateStyle is the style for a VM state (plain for states it does not know).
func (s styles) stateStyle(st api.VMState) lipgloss.Style {
	if style, ok := s.states[st]; ok {
		return style
	}
	return lipgloss.NewStyle()
}

// state renders a VM state in its color.
func (s styles) state(st api.VMState) string { return s.stateStyle(st).Render(string(st)) }
