package tui

import (
	"fmt"
	"slices"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/termtext"
)

// Smallest screen the layout works in; below it the TUI says so instead of
// drawing garbage.
const (
	minWidth  = 40
	minHeight = 10
)

// tabSplitX is the header column between the "VMs" and "Images" tabs, for
// mouse clicks; it follows from renderHeader's fixed left part.
const tabSplitX = 14

// spinnerFrames animate the status line while operations run.
const spinnerFrames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

func spinnerFrame(i int) string {
	frames := []rune(spinnerFrames)
	return string(frames[i%len(frames)])
}

// View implements tea.Model.
func (m *Model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "banger"
	if m.mouse {
		v.MouseMode = tea.MouseModeCellMotion
	}
	return v
}

// bodyHeight is the screen minus the header line and the two footer lines.
func (m *Model) bodyHeight() int { return max(1, m.height-3) }

// render draws the whole screen as exactly m.height lines no wider than
// m.width, so a resize never leaves stale rows behind.
func (m *Model) render() string {
	if m.width <= 0 || m.height <= 0 {
		return ""
	}
	if m.width < minWidth || m.height < minHeight {
		msg := fmt.Sprintf("banger needs at least %d×%d; this terminal is %d×%d", minWidth, minHeight, m.width, m.height)
		return lipgloss.Place(m.width, m.height, lipgloss.Center, lipgloss.Center, wrap(msg, m.width))
	}
	lines := []string{m.renderHeader()}
	lines = append(lines, fit(m.renderBody(), m.bodyHeight(), m.width)...)
	lines = append(lines, truncate(m.renderStatus(), m.width), truncate(m.renderKeys(), m.width))
	return strings.Join(lines, "\n")
}

func (m *Model) renderHeader() string {
	tab := func(title string, active bool) string {
		if active {
			return m.st.tabActive.Render(" " + title + " ")
		}
		return m.st.tab.Render(" " + title + " ")
	}
	left := m.st.header.Render(" banger  ") + tab("VMs", m.view == viewVMs) + " " + tab("Images", m.view == viewImages)

	// Right side, most important first; what does not fit is left out.
	var status string
	switch {
	case m.live:
		status = m.st.ok.Render("● live")
	case m.watchNote != "":
		status = m.st.warn.Render("○ " + m.watchNote)
	default:
		status = m.st.dim.Render("○ connecting")
	}
	var counts string
	if m.view == viewVMs {
		running, paused := 0, 0
		for _, vm := range m.vms {
			switch vm.State {
			case api.VMRunning:
				running++
			case api.VMPaused:
				paused++
			}
		}
		counts = fmt.Sprintf("%s, %d running", plural(len(m.vms), "VM"), running)
		if paused > 0 {
			counts += fmt.Sprintf(", %d paused", paused)
		}
	} else {
		counts = plural(len(m.images), "image")
	}
	var filter string
	if q := m.filter.Value(); q != "" {
		n, _ := m.rows()
		filter = fmt.Sprintf("filter %q: %d shown", q, len(n))
	}
	room := m.width - ansi.StringWidth(left) - 3
	right := truncate(status, room)
	for _, part := range []string{counts, filter} {
		if part != "" && ansi.StringWidth(part)+3+ansi.StringWidth(right) <= room {
			right = part + " · " + right
		}
	}
	right += " "
	return truncate(left+strings.Repeat(" ", max(0, m.width-ansi.StringWidth(left)-ansi.StringWidth(right)))+right, m.width)
}

func (m *Model) renderBody() string {
	switch {
	case m.mode == modeHelp:
		return m.renderHelp()
	case m.mode == modeForm:
		return m.renderForm()
	case m.mode == modeExecOutput && m.execOut != nil:
		return m.renderExecOutput()
	case m.view == viewImages:
		return m.renderImages()
	}
	return m.renderVMs()
}

// vmListHeight splits the body between the list and the details pane: the
// list takes what it needs up to half, the details (and the log) the rest.
func vmListHeight(body, rows int) int {
	if body < 10 {
		return body
	}
	return min(max(rows+1, 2), (body-1)/2)
}

func imageListHeight(body, rows int) int {
	if body < 10 {
		return body
	}
	return min(max(rows+1, 2), body-8)
}

func (m *Model) renderVMs() string {
	body := m.bodyHeight()
	vms := m.visibleVMs()
	listH := vmListHeight(body, len(vms))
	cols := layoutColumns(vmColumns(), m.width-2)
	now := m.now()
	lines := []string{"  " + m.st.colHead.Render(headerRow(cols, m.sortKey, m.sortDesc))}
	if len(vms) == 0 {
		msg := "No VMs yet. Press n to create one."
		if m.filter.Value() != "" {
			msg = "No VM matches the filter; esc clears it."
		} else if !m.loaded {
			msg = "Loading…"
		}
		lines = append(lines, "  "+m.st.dim.Render(msg))
	}
	for i := m.top; i < len(vms) && len(lines) < listH; i++ {
		vm := vms[i]
		cells := cellsFor(cols, vmCells(vm, now))
		if vm.Name == m.selVM {
			lines = append(lines, m.st.selected.Render(pad("▸ "+joinCells(cols, cells, nil), m.width)))
			continue
		}
		lines = append(lines, "  "+joinCells(cols, cells, func(j int, s string) string {
			if cols[j].title != "STATE" {
				return s
			}
			word := strings.TrimRight(s, " ")
			return m.st.stateStyle(vm.State).Render(word) + s[len(word):]
		}))
	}
	if listH >= body {
		return strings.Join(lines, "\n")
	}
	lines = fit(strings.Join(lines, "\n"), listH, m.width)
	lines = append(lines, m.renderVMDetails(body-listH)...)
	return strings.Join(lines, "\n")
}

// column is one table column. width 0 means it shares the spare width.
type column struct {
	title string
	width int
	min   int
	// drop orders which columns go first when the terminal is narrow
	// (higher goes first); 0 never goes.
	drop int
	sort sortKey
}

func vmColumns() []column {
	return []column{
		{title: "NAME", min: 8, sort: sortName},
		{title: "STATE", width: 8, sort: sortState},
		{title: "IP", width: 15, drop: 2, sort: sortIP},
		{title: "IMAGE", min: 6, drop: 5, sort: sortImage},
		{title: "CPU", width: 3, drop: 3, sort: -1},
		{title: "MEM", width: 6, drop: 3, sort: -1},
		{title: "UP", width: 6, drop: 4, sort: sortAge},
	}
}

// vmCells are one VM's table cells by column title.
func vmCells(vm api.VM, now time.Time) map[string]string {
	return map[string]string{
		"NAME":  vm.Name,
		"STATE": string(vm.State),
		"IP":    dash(vm.IP),
		"IMAGE": dash(vm.Image),
		"CPU":   count(vm.VCPUs),
		"MEM":   mib(vm.MemoryMiB),
		"UP":    uptime(vm, now),
	}
}

// cellsFor picks the cells of the columns that survived the layout.
func cellsFor(cols []column, byTitle map[string]string) []string {
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = byTitle[c.title]
	}
	return cells
}

const colGap = 2

// layoutColumns fits cols into width: narrow terminals drop columns by
// their drop rank, and the flexible ones share what is left.
func layoutColumns(cols []column, width int) []column {
	need := func(cs []column) (fixed, flex int) {
		for _, c := range cs {
			if c.width > 0 {
				fixed += c.width
			} else {
				fixed += c.min
				flex++
			}
		}
		return fixed + colGap*(len(cs)-1), flex
	}
	for {
		used, _ := need(cols)
		if used <= width {
			break
		}
		worst := -1
		for i, c := range cols {
			if c.drop > 0 && (worst < 0 || c.drop > cols[worst].drop) {
				worst = i
			}
		}
		if worst < 0 {
			break
		}
		cols = append(cols[:worst:worst], cols[worst+1:]...)
	}
	used, _ := need(cols)
	spare := max(0, width-used)
	out := make([]column, len(cols))
	copy(out, cols)
	var flexIdx []int
	for i, c := range out {
		if c.width == 0 {
			flexIdx = append(flexIdx, i)
		}
	}
	for k, i := range flexIdx {
		// The first flexible column (the name) gets the larger share; the
		// last takes what remains.
		share := spare / (len(flexIdx) - k)
		switch {
		case k == len(flexIdx)-1:
			share = spare
		case k == 0:
			share = spare * 3 / 5
		}
		out[i].width = out[i].min + share
		spare -= share
	}
	return out
}

func headerRow(cols []column, key sortKey, desc bool) string {
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = c.title
		if c.sort == key {
			if desc {
				cells[i] += "▼"
			} else {
				cells[i] += "▲"
			}
		}
	}
	return joinCells(cols, cells, nil)
}

// joinCells pads and truncates cells to their columns; style, when given,
// decorates a padded cell (the padding is already there, so colors never
// shift the alignment).
func joinCells(cols []column, cells []string, style func(int, string) string) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(strings.Repeat(" ", colGap))
		}
		s := pad(truncate(cells[i], c.width), c.width)
		if i == len(cols)-1 {
			s = strings.TrimRight(s, " ")
		}
		if style != nil && cells[i] != "" && s != "" {
			s = style(i, s)
		}
		b.WriteString(s)
	}
	return b.String()
}

func (m *Model) renderVMDetails(h int) []string {
	vm, ok := m.vm(m.selVM)
	if !ok {
		return []string{m.rule("")}
	}
	now := m.now()
	lines := []string{m.rule(vm.Name)}
	kv := func(label, value string) {
		if value == "" {
			return
		}
		lines = append(lines, m.st.label.Render(fmt.Sprintf("%-9s", label))+value)
	}
	state := m.st.state(vm.State)
	if u := uptime(vm, now); u != "-" {
		state += " · up " + u
	}
	if vm.VMM != "" {
		state += " · " + vm.VMM
		if vm.PID > 0 {
			state += fmt.Sprintf(" pid %d", vm.PID)
		}
	}
	if vm.ExitStatus != "" && vm.State != api.VMRunning {
		state += " · " + vm.ExitStatus
	}
	kv("state", state)
	var spec []string
	if vm.VCPUs > 0 {
		spec = append(spec, fmt.Sprintf("%d vCPU", vm.VCPUs))
	}
	if vm.MemoryMiB > 0 {
		spec = append(spec, fmt.Sprintf("%d MiB memory", vm.MemoryMiB))
	}
	if vm.DiskSizeBytes > 0 {
		spec = append(spec, config.ByteSize(vm.DiskSizeBytes).String()+" disk")
	}
	if vm.Image != "" {
		spec = append(spec, "image "+vm.Image)
	}
	kv("spec", strings.Join(spec, " · "))
	kv("address", joinNonEmpty(" · ", vm.IP, vm.MAC))
	kv("dns", vm.DNSName)
	if !vm.CreatedAt.IsZero() {
		created := ago(now.Sub(vm.CreatedAt))
		if vm.Autostart {
			created += " · autostart"
		}
		kv("created", created)
	}
	if vm.LastError != "" {
		for i, l := range wrapLines(termtext.Escape(vm.LastError), max(10, m.width-9)) {
			if i == 3 {
				break
			}
			label := ""
			if i == 0 {
				label = "error"
			}
			lines = append(lines, m.st.label.Render(fmt.Sprintf("%-9s", label))+m.st.err.Render(l))
		}
	}

	room := h - len(lines) - 1
	if room < 1 {
		return lines
	}
	title := "serial log"
	if vm.SerialLog != "" {
		title += " " + vm.SerialLog
	}
	lines = append(lines, m.st.label.Render(truncate(title, m.width)))
	var tail []string
	switch {
	case m.logName != vm.Name:
	case m.logErr != "":
		tail = []string{m.st.dim.Render("(" + m.logErr + ")")}
	case strings.TrimSpace(m.logText) == "":
		tail = []string{m.st.dim.Render("(no console output yet)")}
	default:
		tail = consoleLines(m.logText)
	}
	if len(tail) > room {
		tail = tail[len(tail)-room:]
	}
	for _, l := range tail {
		lines = append(lines, "  "+l)
	}
	return lines
}

// consoleLines makes a guest's serial output safe to draw, by the same rule
// as `banger vm logs` (termtext.Console: colours dropped, every other control
// character shown escaped); tabs become spaces, which would wreck the layout.
func consoleLines(text string) []string {
	text = termtext.Console(strings.TrimRight(text, "\r\n"))
	out := strings.Split(text, "\n")
	for i, l := range out {
		out[i] = strings.ReplaceAll(l, "\t", " ")
	}
	return out
}

func (m *Model) renderImages() string {
	body := m.bodyHeight()
	imgs := m.visibleImages()
	listH := imageListHeight(body, len(imgs))
	cols := layoutColumns([]column{
		{title: "NAME", min: 8},
		{title: "SIZE", width: 6},
		{title: "SOURCE", width: 8, drop: 2},
		{title: "CREATED", width: 9, drop: 3},
		{title: "USED BY", min: 8, drop: 1},
	}, m.width-2)
	lines := []string{"  " + m.st.colHead.Render(headerRow(cols, -1, false))}
	if len(imgs) == 0 {
		msg := "No images yet. Import one with `banger image import`."
		if m.filter.Value() != "" {
			msg = "No image matches the filter; esc clears it."
		}
		lines = append(lines, "  "+m.st.dim.Render(msg))
	}
	now := m.now()
	for i := m.top; i < len(imgs) && len(lines) < listH; i++ {
		im := imgs[i]
		cells := cellsFor(cols, map[string]string{
			"NAME":    im.Name,
			"SIZE":    config.ByteSize(im.SizeBytes).String(),
			"SOURCE":  im.Source,
			"CREATED": ago(now.Sub(im.CreatedAt)),
			"USED BY": dash(strings.Join(m.imageUsers(im.Name), ", ")),
		})
		row := joinCells(cols, cells, nil)
		if im.Name == m.selImage {
			lines = append(lines, m.st.selected.Render(pad("▸ "+row, m.width)))
		} else {
			lines = append(lines, "  "+row)
		}
	}
	if listH >= body {
		return strings.Join(lines, "\n")
	}
	lines = fit(strings.Join(lines, "\n"), listH, m.width)

	im, ok := m.image(m.selImage)
	if !ok {
		lines = append(lines, m.rule(""))
	} else {
		lines = append(lines, m.rule(im.Name))
		kv := func(label, value string) {
			if value != "" {
				lines = append(lines, m.st.label.Render(fmt.Sprintf("%-9s", label))+value)
			}
		}
		kv("id", im.ID)
		kv("kernel", im.Kernel)
		kv("initrd", im.Initrd)
		kv("rootfs", im.Rootfs)
		kv("source", im.Source)
	}
	var builds []string
	for _, op := range m.sortedOps() {
		if op.verb != "build image" {
			continue
		}
		line := m.st.label.Render("building ") + op.target
		if op.hasEvent {
			line += ": " + progressText(op.last, 20)
		}
		builds = append(builds, line+m.st.dim.Render(" "+elapsed(m.now().Sub(op.started))))
	}
	if len(builds) > 0 {
		lines = append(append(lines, ""), builds...)
	} else if m.methods != nil && !m.methods[api.MethodImageBuild] {
		lines = append(lines, "", m.st.dim.Render("Image builds are not available in this daemon yet; `banger image import` works."))
	}
	return strings.Join(lines, "\n")
}

func (m *Model) image(name string) (api.Image, bool) {
	for _, im := range m.images {
		if im.Name == name {
			return im, true
		}
	}
	return api.Image{}, false
}

// imageUsers names the VMs created from image name.
func (m *Model) imageUsers(name string) []string {
	var out []string
	for _, vm := range m.vms {
		if vm.Image == name {
			out = append(out, vm.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (m *Model) renderHelp() string {
	var cols [][]string
	for _, sec := range m.keys {
		col := []string{m.st.header.Render(sec.title)}
		for _, k := range sec.keys {
			col = append(col, m.st.key.Render(fmt.Sprintf("  %-10s", k[0]))+k[1])
		}
		cols = append(cols, append(col, ""))
	}
	// Two columns when they fit side by side: VMs on the right.
	left := append(append([]string{}, cols[0]...), cols[2]...)
	right := cols[1]
	if m.width < 76 {
		return strings.Join(append(left, right...), "\n")
	}
	l := lipgloss.NewStyle().Width(38).Render(strings.Join(left, "\n"))
	r := strings.Join(right, "\n")
	help := lipgloss.JoinHorizontal(lipgloss.Top, l, r)
	return help + "\n" + m.st.dim.Render("VM state is live from the daemon's event stream.")
}

func (m *Model) renderExecOutput() string {
	o := m.execOut
	title := fmt.Sprintf("exec in %s: %s · exit %d", o.vm, o.command, o.res.ExitCode)
	out := m.execLines()
	end := min(len(out), o.scroll+m.execRoom())
	return strings.Join(append([]string{m.rule(title)}, out[min(o.scroll, end):end]...), "\n")
}

// execRoom is how many output lines the exec screen shows at once.
func (m *Model) execRoom() int { return max(1, m.bodyHeight()-1) }

// execLines is the exec output as screen lines, stderr after stdout.
func (m *Model) execLines() []string {
	o := m.execOut
	var out []string
	if strings.TrimSpace(o.res.Stdout) != "" {
		out = append(out, consoleLines(o.res.Stdout)...)
	}
	if strings.TrimSpace(o.res.Stderr) != "" {
		for _, l := range consoleLines(o.res.Stderr) {
			out = append(out, m.st.warn.Render(l))
		}
	}
	if len(out) == 0 {
		out = []string{m.st.dim.Render("(no output)")}
	}
	return out
}

func (m *Model) renderStatus() string {
	ops := m.sortedOps()
	switch {
	case m.err != nil:
		s := m.st.err.Render("✗ " + termtext.Line(m.err.Error())) // it may quote the guest
		if len(ops) > 0 {
			s += fmt.Sprintf(" · %s %d running", spinnerFrame(m.spin), len(ops))
		}
		return s
	case len(ops) > 0:
		op := ops[0]
		s := m.st.warn.Render(spinnerFrame(m.spin)) + " " + op.verb + " " + op.target
		if op.hasEvent {
			s += ": " + progressText(op.last, 16)
		} else {
			s += "…"
		}
		s += m.st.dim.Render(" " + elapsed(m.now().Sub(op.started)))
		if len(ops) > 1 {
			s += m.st.dim.Render(fmt.Sprintf(" (+%d more)", len(ops)-1))
		}
		return s
	case m.info != "":
		return m.st.ok.Render(m.info)
	}
	return ""
}

// progressText is an event's sentence with a bar when it knows its total.
func progressText(ev api.Event, barWidth int) string {
	s := termtext.Line(ev.Message) // it may quote the guest
	if s == "" {
		s = ev.Stage
	}
	if ev.Total > 0 {
		done := min(max(ev.Done, 0), ev.Total)
		filled := int(int64(barWidth) * done / ev.Total)
		s += fmt.Sprintf(" [%s%s] %d%%", strings.Repeat("█", filled), strings.Repeat("░", barWidth-filled), 100*done/ev.Total)
	}
	return s
}

func (m *Model) renderKeys() string {
	switch m.mode {
	case modeFilter:
		return m.filter.View()
	case modeConfirm:
		return m.st.prompt.Render(m.confirm.prompt + " [y/N]")
	case modeExecPrompt:
		return m.st.prompt.Render("exec in "+m.selVM+" ") + m.execIn.View()
	case modeForm:
		return m.keyHints([][2]string{{"enter", m.form.verb}, {"tab", "next"}, {"esc", "cancel"}})
	case modeHelp:
		return m.keyHints([][2]string{{"any key", "close help"}})
	case modeExecOutput:
		return m.keyHints([][2]string{{"↑/↓", "scroll"}, {"esc", "close"}})
	}
	return m.keyHints(m.hints())
}

// keyHints lays out as many hints as fit; the last two (help and quit)
// always stay, since help lists the rest.
func (m *Model) keyHints(hints [][2]string) string {
	render := func(h [2]string) string { return "  " + m.st.key.Render(h[0]) + " " + h[1] }
	keep := min(2, len(hints))
	tail := ""
	for _, h := range hints[len(hints)-keep:] {
		tail += render(h)
	}
	room := m.width - 1 - ansi.StringWidth(tail)
	head := ""
	for _, h := range hints[:len(hints)-keep] {
		part := render(h)
		if ansi.StringWidth(head)+ansi.StringWidth(part) > room {
			break
		}
		head += part
	}
	return strings.TrimPrefix(head+tail, " ")
}

// rule is a divider line with a title.
func (m *Model) rule(title string) string {
	head := "─"
	if title != "" {
		head = "─ " + title + " "
	}
	head = truncate(head, m.width)
	return m.st.rule.Render(head + strings.Repeat("─", max(0, m.width-ansi.StringWidth(head))))
}

// fit returns s as exactly h lines, each cut to w columns.
func fit(s string, h, w int) []string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for i := range lines {
		lines[i] = truncate(lines[i], w)
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return lines
}

func truncate(s string, w int) string {
	if ansi.StringWidth(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, "…")
}

func pad(s string, w int) string {
	return s + strings.Repeat(" ", max(0, w-ansi.StringWidth(s)))
}

func wrap(s string, w int) string { return strings.Join(wrapLines(s, w), "\n") }

func wrapLines(s string, w int) []string {
	return strings.Split(ansi.Wrap(s, max(1, w), ""), "\n")
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func count(n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func mib(n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%dM", n)
}

// uptime is how long a running VM has been up, "-" otherwise.
func uptime(vm api.VM, now time.Time) string {
	if vm.State != api.VMRunning || vm.StartedAt == nil {
		return "-"
	}
	return elapsed(now.Sub(*vm.StartedAt))
}

// elapsed is a short duration: 45s, 12m, 3h12m, 2d3h.
func elapsed(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("1d%dh", int(d.Hours())-24)
	}
	return fmt.Sprintf("%dd", int(d.Hours())/24)
}

func ago(d time.Duration) string {
	if d < 0 {
		return "just now"
	}
	return elapsed(d) + " ago"
}
