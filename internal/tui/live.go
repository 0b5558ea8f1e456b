package tui

import (
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
)

// Watch event kinds (see api.Event.Kind).
const (
	kindWatchStarted = "watch.started"
	kindVMState      = "vm.state"
	kindVMDeleted    = "vm.deleted"
	kindImageChanged = "image.changed"
)

// Timings.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 5 * time.Second
	// noWatchRetry is how often to look again for events.watch on a daemon
	// that lacks it (it may be replaced by a newer build meanwhile).
	noWatchRetry   = 30 * time.Second
	spinEvery      = 120 * time.Millisecond
	logFollowEvery = 2 * time.Second
	logTailLines   = 200
)

// post hands msg to the program from inside a running command, unless the
// TUI is shutting down.
func (m *Model) post(msg tea.Msg) {
	select {
	case m.inbox <- msg:
	case <-m.ctx.Done():
	}
}

// watchCmd subscribes to the daemon's change events. It runs for as long as
// the stream lives; its events and its end travel through the inbox so they
// arrive in order.
func (m *Model) watchCmd() tea.Cmd {
	return func() tea.Msg {
		err := m.client.WatchEvents(m.ctx, func(ev api.Event) { m.post(watchEventMsg{ev: ev}) })
		m.post(watchEndedMsg{err: err})
		return nil
	}
}

// watchEnded schedules a reconnect. The reconnect's watch.started brings a
// full refresh, so whatever changed while the stream was down is picked up.
func (m *Model) watchEnded(err error) tea.Cmd {
	m.live = false
	if m.ctx.Err() != nil {
		return nil
	}
	var cmds []tea.Cmd
	delay := noWatchRetry
	if isUnknownMethod(err) {
		// An older daemon: no live updates, so refresh after each action
		// instead (see finishOp) and look for events.watch now and then.
		m.watchNote = "no live updates (daemon has no events.watch)"
	} else {
		m.backoff = min(max(2*m.backoff, backoffMin), backoffMax)
		delay = m.backoff
		m.watchNote = "reconnecting"
		if err != nil {
			m.watchNote = "reconnecting: " + errText(err)
		}
	}
	if !m.loaded {
		cmds = append(cmds, m.refreshAll())
	}
	cmds = append(cmds, m.after(delay, watchRetryMsg{}))
	return tea.Batch(cmds...)
}

// refreshAll reloads everything the views show.
func (m *Model) refreshAll() tea.Cmd {
	m.refreshGen++
	m.refreshing = true
	m.pending = nil
	gen, ctx, c := m.refreshGen, m.ctx, m.client
	return tea.Batch(
		func() tea.Msg {
			info, err := c.DaemonInfo(ctx)
			return infoMsg{info: info, err: err}
		},
		func() tea.Msg {
			vms, err := c.VMList(ctx)
			return vmListMsg{gen: gen, vms: vms, err: err}
		},
		m.refreshImages(),
	)
}

func (m *Model) refreshImages() tea.Cmd {
	ctx, c := m.ctx, m.client
	return func() tea.Msg {
		imgs, err := c.ImageList(ctx)
		return imageListMsg{images: imgs, err: err}
	}
}

// applyVMList installs a full list. Events that arrived while it was in
// flight are replayed on top: each carries a state at least as new as the
// snapshot's, and replaying them in order ends at the latest one.
func (m *Model) applyVMList(msg vmListMsg) tea.Cmd {
	if msg.gen != m.refreshGen {
		return nil // a newer refresh is on its way
	}
	m.refreshing = false
	pending := m.pending
	m.pending = nil
	if msg.err != nil {
		m.setErr("list VMs", msg.err)
		return nil
	}
	m.loaded = true
	m.vms = msg.vms
	for _, ev := range pending {
		m.applyStateChange(ev)
	}
	return m.fixSelection()
}

// applyEvent folds one watch event into the model.
func (m *Model) applyEvent(ev api.Event) tea.Cmd {
	switch ev.Kind {
	case kindWatchStarted:
		m.live = true
		m.backoff = 0
		m.watchNote = ""
		return m.refreshAll()
	case kindVMState, kindVMDeleted:
		if ev.VM == "" {
			return nil
		}
		if m.refreshing {
			m.pending = append(m.pending, ev)
		}
		m.applyStateChange(ev)
		var cmds []tea.Cmd
		if ev.Kind == kindVMState {
			// The event carries only the state; the address, PID and last
			// error change with it, so fetch the VM once.
			cmds = append(cmds, m.showVM(ev.VM))
			if ev.VM == m.selVM {
				cmds = append(cmds, m.followLogs())
			}
		}
		cmds = append(cmds, m.fixSelection())
		return tea.Batch(cmds...)
	case kindImageChanged:
		return m.refreshImages()
	}
	return nil
}

// applyStateChange applies a vm.state or vm.deleted event to the list and
// bumps the VM's sequence number so answers to older VMShow calls are dropped.
func (m *Model) applyStateChange(ev api.Event) {
	m.seq[ev.VM]++
	i := m.vmIndex(ev.VM)
	switch {
	case ev.Kind == kindVMDeleted && i >= 0:
		m.vms = append(m.vms[:i:i], m.vms[i+1:]...)
	case ev.Kind == kindVMState && i >= 0:
		m.vms[i].State = ev.State
	case ev.Kind == kindVMState:
		// A VM we have not seen (created elsewhere, or just now): show its
		// name at once; VMShow fills in the rest.
		m.vms = append(m.vms, api.VM{Name: ev.VM, State: ev.State})
	}
}

// showVM fetches one VM; the answer is used only if no event about that VM
// came in meanwhile.
func (m *Model) showVM(name string) tea.Cmd {
	ctx, c, seq := m.ctx, m.client, m.seq[name]
	return func() tea.Msg {
		vm, err := c.VMShow(ctx, name)
		return vmShowMsg{name: name, seq: seq, vm: vm, err: err}
	}
}

func (m *Model) applyShow(msg vmShowMsg) tea.Cmd {
	if msg.seq != m.seq[msg.name] {
		return nil
	}
	i := m.vmIndex(msg.name)
	switch {
	case api.IsCode(msg.err, api.CodeNotFound) && !isUnknownMethod(msg.err):
		if i >= 0 {
			m.vms = append(m.vms[:i:i], m.vms[i+1:]...)
		}
	case msg.err != nil:
		m.setErr("show "+msg.name, msg.err)
		return nil
	case i >= 0:
		m.vms[i] = msg.vm
	default:
		m.vms = append(m.vms, msg.vm)
	}
	return m.fixSelection()
}

// followLogs loads the selected VM's serial log and keeps reloading it
// while that VM runs and stays selected.
func (m *Model) followLogs() tea.Cmd {
	m.logGen++
	if m.selVM == "" {
		m.logName, m.logText, m.logErr = "", "", ""
		return nil
	}
	if m.logName != m.selVM {
		m.logName, m.logText, m.logErr = m.selVM, "", ""
	}
	return tea.Batch(m.fetchLogs(m.selVM), m.after(logFollowEvery, logTickMsg{gen: m.logGen}))
}

func (m *Model) fetchLogs(name string) tea.Cmd {
	ctx, c := m.ctx, m.client
	return func() tea.Msg {
		logs, err := c.VMLogs(ctx, api.VMLogsRequest{Name: name, Lines: logTailLines})
		return logsMsg{name: name, logs: logs, err: err}
	}
}

// vm returns the VM called name.
func (m *Model) vm(name string) (api.VM, bool) {
	if i := m.vmIndex(name); i >= 0 {
		return m.vms[i], true
	}
	return api.VM{}, false
}

func (m *Model) vmIndex(name string) int {
	for i := range m.vms {
		if m.vms[i].Name == name {
			return i
		}
	}
	return -1
}
