package tui

import (
	"fmt"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
)

// helpSection is one block of the `?` screen. The key handlers below are
// the truth; this is their description, kept next to them.
type helpSection struct {
	title string
	keys  [][2]string
}

func helpSections() []helpSection {
	return []helpSection{
		{"Everywhere", [][2]string{
			{"↑/k ↓/j", "move"},
			{"pgup pgdn", "page"},
			{"g G", "first, last"},
			{"tab 1 2", "VMs, Images"},
			{"/", "filter (esc clears)"},
			{"m", "mouse on/off"},
			{"?", "this help"},
			{"q ctrl+c", "quit"},
		}},
		{"VMs", [][2]string{
			{"n", "new VM (form)"},
			{"s", "start"},
			{"x", "stop"},
			{"X", "force stop (asks)"},
			{"r", "restart"},
			{"p", "pause, resume"},
			{"S", "snapshot"},
			{"d", "delete (asks)"},
			{"enter", "shell (suspends the TUI)"},
			{"e", "exec a command"},
			{"l", "reload serial log"},
			{"o O", "sort column, reverse"},
		}},
		{"Images", [][2]string{
			{"b", "build an image (form)"},
			{"d", "delete (asks)"},
		}},
	}
}

// hints is the one-line key summary at the bottom, per view.
func (m *Model) hints() [][2]string {
	if m.view == viewImages {
		return [][2]string{{"b", "build"}, {"d", "delete"}, {"/", "filter"}, {"tab", "VMs"}, {"?", "help"}, {"q", "quit"}}
	}
	return [][2]string{{"n", "new"}, {"s", "start"}, {"x", "stop"}, {"r", "restart"}, {"d", "delete"},
		{"⏎", "shell"}, {"e", "exec"}, {"/", "filter"}, {"o", "sort"}, {"?", "help"}, {"q", "quit"}}
}

func (m *Model) handleKey(msg tea.KeyPressMsg) tea.Cmd {
	key := msg.String()
	if key == "ctrl+c" {
		return tea.Quit
	}
	switch m.mode {
	case modeHelp:
		m.mode = modeNormal
		return nil
	case modeConfirm:
		c := m.confirm
		m.confirm, m.mode = nil, modeNormal
		if key == "y" || key == "Y" {
			return c.run()
		}
		m.info = "cancelled"
		return nil
	case modeFilter:
		switch key {
		case "esc":
			m.filter.Reset()
			m.filter.Blur()
			m.mode = modeNormal
			return m.fixSelection()
		case "enter", "tab", "up", "down":
			m.filter.Blur()
			m.mode = modeNormal
			return m.fixSelection()
		}
		m.filter.handleKey(msg)
		return m.fixSelection()
	case modeForm:
		switch m.form.handleKey(msg) {
		case formCancel:
			m.mode = modeNormal
		case formSubmit:
			return m.submitForm()
		}
		return nil
	case modeExecPrompt:
		switch key {
		case "esc":
			m.mode = modeNormal
			return nil
		case "enter":
			m.mode = modeNormal
			command := strings.TrimSpace(m.execIn.Value())
			if command == "" || m.selVM == "" {
				return nil
			}
			return m.runExec(m.selVM, command)
		}
		m.execIn.handleKey(msg)
		return nil
	case modeExecOutput:
		o := m.execOut
		switch key {
		case "esc", "q", "enter":
			m.mode, m.execOut = modeNormal, nil
			return nil
		case "up", "k":
			o.scroll--
		case "down", "j":
			o.scroll++
		case "pgup":
			o.scroll -= m.execRoom()
		case "pgdown", "space":
			o.scroll += m.execRoom()
		case "g", "home":
			o.scroll = 0
		case "G", "end":
			o.scroll = len(m.execLines())
		}
		o.scroll = max(0, min(o.scroll, len(m.execLines())-m.execRoom()))
		return nil
	}
	return m.normalKey(key)
}

func (m *Model) normalKey(key string) tea.Cmd {
	// Keys that work in both views.
	switch key {
	case "q":
		if len(m.ops) > 0 {
			return m.ask(fmt.Sprintf("Quit and cancel %s?", m.opsSummary()), func() tea.Cmd { return tea.Quit })
		}
		return tea.Quit
	case "?":
		m.mode = modeHelp
		return nil
	case "esc":
		m.err, m.info = nil, ""
		if m.filter.Value() != "" {
			m.filter.Reset()
			return m.fixSelection()
		}
		return nil
	case "tab", "shift+tab":
		return m.switchView(1 - m.view)
	case "1":
		return m.switchView(viewVMs)
	case "2":
		return m.switchView(viewImages)
	case "m":
		m.mouse = !m.mouse
		m.info = "mouse off: the terminal selects text again"
		if m.mouse {
			m.info = "mouse on: click selects, wheel moves"
		}
		return nil
	case "/":
		m.mode = modeFilter
		m.filter.Focus()
		return nil
	case "up", "k":
		return m.move(-1)
	case "down", "j":
		return m.move(1)
	case "pgup":
		return m.move(-m.listRows())
	case "pgdown":
		return m.move(m.listRows())
	case "g", "home":
		return m.move(-1 << 30)
	case "G", "end":
		return m.move(1 << 30)
	}
	if m.view == viewImages {
		if key == "b" {
			if m.lacks(api.MethodImageBuild, "image builds are") {
				return nil
			}
			m.form = newImageForm(m.width, m.st)
			m.mode = modeForm
			return nil
		}
		if key == "d" && m.selImage != "" {
			name := m.selImage
			prompt := fmt.Sprintf("Delete image %s? VMs cannot be created from it afterwards.", name)
			if users := m.imageUsers(name); len(users) > 0 {
				prompt = fmt.Sprintf("Delete image %s (used by %s; the daemon will refuse)?", name, strings.Join(users, ", "))
			}
			return m.ask(prompt, func() tea.Cmd { return m.deleteImage(name) })
		}
		return nil
	}

	switch key {
	case "n":
		m.form = newVMForm(m.images, m.width, m.st)
		m.mode = modeForm
		return nil
	case "o":
		m.sortKey = (m.sortKey + 1) % sortKeys
		return nil
	case "O":
		m.sortDesc = !m.sortDesc
		return nil
	}
	vm, ok := m.selectedVM()
	if !ok {
		return nil
	}
	name := vm.Name
	switch key {
	case "s":
		return m.startVM(name)
	case "x":
		return m.stopVM(name, false)
	case "X":
		return m.ask(fmt.Sprintf("Force stop %s? The VMM is killed without a clean guest shutdown.", name),
			func() tea.Cmd { return m.stopVM(name, true) })
	case "r":
		return m.restartVM(name)
	case "p":
		return m.togglePause(vm)
	case "S":
		return m.snapshotVM(vm)
	case "d":
		return m.ask(fmt.Sprintf("Delete VM %s, its disk and its snapshots? This cannot be undone.", name),
			func() tea.Cmd { return m.deleteVM(name) })
	case "enter":
		return m.shell()
	case "e":
		return m.openExec()
	case "l":
		return m.followLogs()
	}
	return nil
}

// submitForm validates the open form and starts what it asks for; a
// mistake keeps the form open at the field to fix.
func (m *Model) submitForm() tea.Cmd {
	var (
		run   func() tea.Cmd
		field int
		err   error
	)
	switch m.form.kind {
	case formCreateVM:
		var req api.VMCreateRequest
		req, field, err = m.form.vmRequest()
		run = func() tea.Cmd { return m.createVM(req) }
	case formBuildImage:
		var req api.ImageBuildRequest
		req, field, err = m.form.buildRequest()
		run = func() tea.Cmd { return m.buildImage(req) }
	}
	if err != nil {
		m.form.err = err.Error()
		m.form.focusField(field)
		return nil
	}
	m.form.err = ""
	m.mode = modeNormal
	return run()
}

func (m *Model) switchView(v view) tea.Cmd {
	m.view = v
	m.top = 0
	cmd := m.fixSelection()
	if v == viewVMs {
		// Log following pauses while the VM list is hidden.
		return m.followLogs()
	}
	return cmd
}

func (m *Model) handlePaste(msg tea.PasteMsg) tea.Cmd {
	switch m.mode {
	case modeFilter:
		m.filter.insert(msg.Content)
		return m.fixSelection()
	case modeExecPrompt:
		m.execIn.insert(msg.Content)
	case modeForm:
		m.form.paste(msg.Content)
	}
	return nil
}

// listTop is the screen row of the first list entry: the header line and
// the column titles come first.
const listTop = 2

func (m *Model) handleClick(mouse tea.Mouse) tea.Cmd {
	if !m.mouse || m.mode != modeNormal || mouse.Button != tea.MouseLeft {
		return nil
	}
	if mouse.Y == 0 {
		// The header's tabs: "VMs" sits left of "Images".
		if mouse.X < tabSplitX {
			return m.switchView(viewVMs)
		}
		return m.switchView(viewImages)
	}
	names, _ := m.rows()
	i := m.top + mouse.Y - listTop
	if mouse.Y < listTop || mouse.Y-listTop >= m.listRows() || i >= len(names) {
		return nil
	}
	return m.selectRow(names[i])
}

func (m *Model) handleWheel(mouse tea.Mouse) tea.Cmd {
	if !m.mouse || m.mode != modeNormal {
		return nil
	}
	switch mouse.Button {
	case tea.MouseWheelUp:
		return m.move(-1)
	case tea.MouseWheelDown:
		return m.move(1)
	}
	return nil
}
