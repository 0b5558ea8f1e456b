package tui

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
)

// sortKey is the VM list's sort column; `o` cycles through them.
type sortKey int

const (
	sortName sortKey = iota
	sortState
	sortImage
	sortIP
	sortAge
	sortKeys // count
)

func (k sortKey) String() string {
	return [...]string{"name", "state", "image", "ip", "age"}[k]
}

// stateRank orders states so that live VMs come first and stopped ones last.
func stateRank(s api.VMState) int {
	switch s {
	case api.VMRunning:
		return 0
	case api.VMStarting, api.VMCreating:
		return 1
	case api.VMStopping, api.VMDeleting:
		return 2
	case api.VMFailed:
		return 3
	case api.VMStopped:
		return 4
	}
	return 5
}

func compareIP(a, b string) int {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	switch {
	case errA != nil && errB != nil:
		return 0
	case errA != nil:
		return 1 // no address sorts last
	case errB != nil:
		return -1
	}
	return pa.Compare(pb)
}

// visibleVMs is the VM list after the filter and the sort.
func (m *Model) visibleVMs() []api.VM {
	q := strings.ToLower(strings.TrimSpace(m.filter.Value()))
	out := make([]api.VM, 0, len(m.vms))
	for _, vm := range m.vms {
		if q == "" || matches(q, vm.Name, string(vm.State), vm.Image, vm.IP, vm.DNSName) {
			out = append(out, vm)
		}
	}
	slices.SortStableFunc(out, func(a, b api.VM) int {
		var c int
		switch m.sortKey {
		case sortState:
			c = cmp.Compare(stateRank(a.State), stateRank(b.State))
		case sortImage:
			c = strings.Compare(a.Image, b.Image)
		case sortIP:
			c = compareIP(a.IP, b.IP)
		case sortAge:
			// Oldest first, as `ls -tr` would: "age" ascending.
			c = a.CreatedAt.Compare(b.CreatedAt)
		}
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
		}
		if m.sortDesc {
			c = -c
		}
		return c
	})
	return out
}

// visibleImages is the image list after the filter, by name.
func (m *Model) visibleImages() []api.Image {
	q := strings.ToLower(strings.TrimSpace(m.filter.Value()))
	out := make([]api.Image, 0, len(m.images))
	for _, im := range m.images {
		if q == "" || matches(q, im.Name, im.Source) {
			out = append(out, im)
		}
	}
	slices.SortFunc(out, func(a, b api.Image) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func matches(q string, fields ...string) bool {
	for _, f := range fields {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	return false
}

// rows returns the names of the current list and the selected index.
func (m *Model) rows() (names []string, sel int) {
	sel = -1
	if m.view == viewImages {
		for i, im := range m.visibleImages() {
			names = append(names, im.Name)
			if im.Name == m.selImage {
				sel = i
			}
		}
		return names, sel
	}
	for i, vm := range m.visibleVMs() {
		names = append(names, vm.Name)
		if vm.Name == m.selVM {
			sel = i
		}
	}
	return names, sel
}

// fixSelection keeps a valid selection after the lists changed, and loads
// the serial log when the selected VM is a different one.
func (m *Model) fixSelection() tea.Cmd {
	pick := func(names []string, cur string) string {
		if slices.Contains(names, cur) {
			return cur
		}
		if len(names) == 0 {
			return ""
		}
		return names[0]
	}
	var vmNames []string
	for _, vm := range m.visibleVMs() {
		vmNames = append(vmNames, vm.Name)
	}
	var imNames []string
	for _, im := range m.visibleImages() {
		imNames = append(imNames, im.Name)
	}
	m.selImage = pick(imNames, m.selImage)
	prev := m.selVM
	m.selVM = pick(vmNames, m.selVM)
	if m.selVM != prev || m.selVM != m.logName {
		return m.followLogs()
	}
	return nil
}

// move shifts the selection by delta rows (clamped).
func (m *Model) move(delta int) tea.Cmd {
	names, sel := m.rows()
	if len(names) == 0 {
		return nil
	}
	sel = min(max(sel+delta, 0), len(names)-1)
	return m.selectRow(names[sel])
}

func (m *Model) selectRow(name string) tea.Cmd {
	if m.view == viewImages {
		m.selImage = name
		return nil
	}
	if m.selVM == name {
		return nil
	}
	m.selVM = name
	return m.followLogs()
}

// listRows is how many list rows fit on screen, matching renderBody.
func (m *Model) listRows() int {
	body := m.bodyHeight()
	n, _ := m.rows()
	if m.view == viewVMs {
		return max(1, vmListHeight(body, len(n))-1)
	}
	return max(1, imageListHeight(body, len(n))-1)
}

// syncScroll keeps the selected row inside the visible window.
func (m *Model) syncScroll() {
	names, sel := m.rows()
	rows := m.listRows()
	if sel < 0 {
		sel = 0
	}
	if sel < m.top {
		m.top = sel
	}
	if sel >= m.top+rows {
		m.top = sel - rows + 1
	}
	m.top = max(0, min(m.top, len(names)-rows))
}
