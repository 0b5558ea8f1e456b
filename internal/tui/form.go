package tui

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
)

// formKind says what a submitted form becomes.
type formKind int

const (
	formCreateVM formKind = iota
	formBuildImage
)

// form is a small dialog of labelled fields. A field is either text (empty
// meaning "the configured default") or a picker over fixed choices (used
// for the image, since typing a name that does not exist helps nobody).
type form struct {
	kind   formKind
	title  string
	verb   string // what enter does: "create", "build"
	fields []formField
	focus  int
	err    string
}

type formField struct {
	label   string
	input   field
	choices []string // non-nil makes this a picker
	choice  int
	// none is how the picker shows the "" choice.
	none string
}

// VM create form fields, in tab order.
const (
	fieldName = iota
	fieldImage
	fieldVCPUs
	fieldMemory
	fieldDisk
)

func newVMForm(images []api.Image, width int, st styles) form {
	choices := []string{""}
	for _, im := range images {
		choices = append(choices, im.Name)
	}
	slices.Sort(choices[1:])
	f := form{kind: formCreateVM, title: "Create a VM", verb: "create", fields: []formField{
		{label: "Name", input: newField("", "lowercase letters, digits, dashes", st)},
		{label: "Image", choices: choices, none: "default image"},
		{label: "vCPUs", input: newField("", "default from config", st)},
		{label: "Memory", input: newField("", "MiB, or a size like 2G; default from config", st)},
		{label: "Disk", input: newField("", "a size like 8G; default from config", st)},
	}}
	f.fields[fieldName].input.limit = 63
	f.setWidth(width)
	f.focusField(fieldName)
	return f
}

// Image build form fields.
const (
	buildName = iota
	buildFrom
	buildSize
	buildPackages
)

func newImageForm(width int, st styles) form {
	f := form{kind: formBuildImage, title: "Build an image (debootstrap; takes minutes)", verb: "build", fields: []formField{
		{label: "Name", input: newField("", "a name for the image", st)},
		{label: "From", input: newField("", "debian:SUITE; default from config", st)},
		{label: "Size", input: newField("", "root file system size; default 2G", st)},
		{label: "Packages", input: newField("", "extra Debian packages, comma-separated", st)},
	}}
	f.setWidth(width)
	f.focusField(buildName)
	return f
}

// formInnerWidth is the width of the text inside the form's box.
func formInnerWidth(termWidth int) int {
	return max(20, min(60, termWidth-6))
}

// formLabelWidth leaves room for the focus marker and the longest label.
const formLabelWidth = 11

func (f *form) setWidth(termWidth int) {
	for i := range f.fields {
		f.fields[i].input.SetWidth(max(8, formInnerWidth(termWidth)-formLabelWidth-3))
	}
}

// focusField moves the cursor to field i (wrapping around).
func (f *form) focusField(i int) {
	if len(f.fields) == 0 {
		return
	}
	f.focus = (i + len(f.fields)) % len(f.fields)
	for j := range f.fields {
		f.fields[j].input.Blur()
	}
	if f.fields[f.focus].choices == nil {
		f.fields[f.focus].input.Focus()
	}
}

// value is field i's text or chosen item, trimmed.
func (f *form) value(i int) string {
	fl := &f.fields[i]
	if fl.choices != nil {
		return fl.choices[fl.choice]
	}
	return strings.TrimSpace(fl.input.Value())
}

type formAction int

const (
	formEditing formAction = iota
	formSubmit
	formCancel
)

func (f *form) handleKey(msg tea.KeyPressMsg) formAction {
	switch msg.String() {
	case "esc":
		return formCancel
	case "enter":
		return formSubmit
	case "tab", "down":
		f.focusField(f.focus + 1)
		return formEditing
	case "shift+tab", "up":
		f.focusField(f.focus - 1)
		return formEditing
	}
	fl := &f.fields[f.focus]
	if fl.choices == nil {
		fl.input.handleKey(msg)
		return formEditing
	}
	switch msg.String() {
	case "left", "h":
		fl.choice = (fl.choice - 1 + len(fl.choices)) % len(fl.choices)
	case "right", "l", "space":
		fl.choice = (fl.choice + 1) % len(fl.choices)
	}
	return formEditing
}

func (f *form) paste(text string) {
	if fl := &f.fields[f.focus]; fl.choices == nil {
		fl.input.insert(text)
	}
}

// vmRequest validates the VM form. The daemon checks again (name rules,
// limits); this catches what can be caught without a round trip. On error
// it also says which field to go back to.
func (f *form) vmRequest() (api.VMCreateRequest, int, error) {
	req := api.VMCreateRequest{Name: f.value(fieldName), Image: f.value(fieldImage)}
	if req.Name == "" {
		return req, fieldName, fmt.Errorf("name: required")
	}
	if v := f.value(fieldVCPUs); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return req, fieldVCPUs, fmt.Errorf("vCPUs: %q is not a positive whole number", v)
		}
		req.VCPUs = n
	}
	if v := f.value(fieldMemory); v != "" {
		mib, err := parseMiB(v)
		if err != nil {
			return req, fieldMemory, fmt.Errorf("memory: %w", err)
		}
		req.MemoryMiB = mib
	}
	if v := f.value(fieldDisk); v != "" {
		size, err := config.ParseSize(v)
		if err != nil {
			return req, fieldDisk, fmt.Errorf("disk: %w", err)
		}
		req.DiskSizeBytes = int64(size)
	}
	return req, 0, nil
}

// buildRequest validates the image build form.
func (f *form) buildRequest() (api.ImageBuildRequest, int, error) {
	req := api.ImageBuildRequest{Name: f.value(buildName), From: f.value(buildFrom)}
	if req.Name == "" {
		return req, buildName, fmt.Errorf("name: required")
	}
	if v := f.value(buildSize); v != "" {
		size, err := config.ParseSize(v)
		if err != nil {
			return req, buildSize, fmt.Errorf("size: %w", err)
		}
		req.SizeBytes = int64(size)
	}
	req.Packages = append(req.Packages, strings.FieldsFunc(f.value(buildPackages), func(r rune) bool { return r == ',' || r == ' ' })...)
	return req, 0, nil
}

// parseMiB reads memory as plain MiB ("2048") or a size with a unit ("2G").
func parseMiB(v string) (int, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return 0, fmt.Errorf("%q must be at least 1 MiB", v)
		}
		return n, nil
	}
	size, err := config.ParseSize(v)
	if err != nil {
		return 0, err
	}
	if size < 1<<20 || size%(1<<20) != 0 {
		return 0, fmt.Errorf("%q is not a whole number of MiB", v)
	}
	return int(size >> 20), nil
}

func (m *Model) renderForm() string {
	f := &m.form
	inner := formInnerWidth(m.width)
	lines := []string{m.st.header.Render(f.title), ""}
	for i, fl := range f.fields {
		marker := "  "
		if i == f.focus {
			marker = m.st.key.Render("▸ ")
		}
		var value string
		if fl.choices != nil {
			name := fl.choices[fl.choice]
			if name == "" {
				name = fl.none
			}
			value = "‹ " + name + " ›"
			if len(fl.choices) == 1 {
				value += m.st.dim.Render("  (nothing else to pick)")
			}
		} else {
			value = fl.input.View()
		}
		lines = append(lines, marker+m.st.label.Render(fmt.Sprintf("%-*s", formLabelWidth-2, fl.label))+value)
	}
	lines = append(lines, "", m.st.dim.Render("enter "+f.verb+" · tab next field · ←/→ pick · esc cancel"))
	for i, l := range lines {
		lines[i] = truncate(l, inner)
	}
	if f.err != "" {
		for _, l := range wrapLines("✗ "+f.err, inner) {
			lines = append(lines, m.st.err.Render(l))
		}
	}
	box := m.st.box.Width(inner + 4).Render(strings.Join(lines, "\n"))
	return lipgloss.Place(m.width, m.bodyHeight(), lipgloss.Center, lipgloss.Center, box)
}
