// Package tui is banger's terminal interface: a Bubble Tea program over the
// same typed daemon client the CLI uses. VM state is kept live from the
// daemon's events.watch stream (a full refresh whenever the stream starts,
// so nothing is missed across reconnects) rather than by polling.
package tui

import (
	"context"
	"errors"
	"os/exec"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
)

// view is the list the body shows.
type view int

const (
	viewVMs view = iota
	viewImages
)

// mode is what the keyboard currently talks to.
type mode int

const (
	modeNormal mode = iota
	modeFilter
	modeForm
	modeConfirm
	modeExecPrompt
	modeExecOutput
	modeHelp
)

// deps are the Model's connections to time and to the running program,
// swapped in tests so updates are deterministic.
type deps struct {
	// inbox carries messages produced inside long-running commands (watch
	// events, operation progress) to the program in order.
	inbox chan tea.Msg
	now   func() time.Time
	// after delivers msg once d has passed (tea.Tick in the real program).
	after func(d time.Duration, msg tea.Msg) tea.Cmd
}

// Model is the whole TUI state. Its methods use a pointer receiver: Bubble
// Tea only needs Update to return the model, and one mutable value keeps the
// bookkeeping (event sequence numbers, pending replays) in one place.
type Model struct {
	ctx    context.Context
	client Client
	deps
	sshCommand   func(name string) *exec.Cmd
	shellCommand func(name string) *exec.Cmd
	st           styles
	keys         []helpSection

	width, height int
	view          view
	mode          mode
	mouse         bool

	vms     []api.VM
	images  []api.Image
	methods map[string]bool // from daemon.info; nil until known
	loaded  bool            // a VM list has arrived at least once

	selVM, selImage string // selection by name, stable across re-sorting
	top             int    // first visible row of the current list
	filter          field
	sortKey         sortKey
	sortDesc        bool

	logName string // whose serial log logText holds
	logText string
	logErr  string
	logGen  int // current log-follow chain; see logTickMsg

	// Live-state bookkeeping: see applyEvent.
	live       bool
	watchNote  string
	backoff    time.Duration
	refreshGen int
	refreshing bool
	pending    []api.Event
	seq        map[string]int

	ops    map[int]*operation
	nextOp int
	spin   int

	info    string
	err     error
	confirm *confirmation
	form    form
	execIn  field
	execOut *execOutput
}

// confirmation is a destructive action waiting for y.
type confirmation struct {
	prompt string
	run    func() tea.Cmd
}

// execOutput is the result of one exec, shown until dismissed.
type execOutput struct {
	vm, command string
	res         execResult
	scroll      int
}

// Messages. Results of quick daemon calls come back as command results;
// anything from a long-running call travels through deps.inbox so its order
// is kept.
type (
	infoMsg struct {
		info api.DaemonInfo
		err  error
	}
	vmListMsg struct {
		gen int
		vms []api.VM
		err error
	}
	imageListMsg struct {
		images []api.Image
		err    error
	}
	vmShowMsg struct {
		name string
		seq  int
		vm   api.VM
		err  error
	}
	logsMsg struct {
		name string
		logs api.VMLogs
		err  error
	}
	watchEventMsg struct{ ev api.Event }
	watchEndedMsg struct{ err error }
	watchRetryMsg struct{}
	progressMsg   struct {
		op int
		ev api.Event
	}
	opDoneMsg struct {
		op  int
		err error
	}
	// shellChosenMsg says how to open a shell in vm: ssh, or the agent.
	shellChosenMsg struct {
		vm  string
		ssh bool
	}
	// shellDoneMsg ends a suspended session; what is "ssh dev" or
	// "shell in dev".
	shellDoneMsg struct {
		what string
		err  error
	}
	spinMsg    struct{}
	logTickMsg struct{ gen int }
)

func newModel(ctx context.Context, opts Options, d deps) *Model {
	m := &Model{
		ctx:          ctx,
		client:       opts.Client,
		deps:         d,
		sshCommand:   opts.SSHCommand,
		shellCommand: opts.ShellCommand,
		st:           newStyles(opts.NoColor),
		mouse:        opts.Mouse,
		seq:          map[string]int{},
		ops:          map[int]*operation{},
	}
	m.keys = helpSections()
	m.filter = newField("/ ", "filter by name, state, image or address", m.st)
	m.execIn = newField("$ ", "a command line, run with /bin/sh -c", m.st)
	return m
}

// Init starts the event stream; its first event triggers the first load.
func (m *Model) Init() tea.Cmd {
	return m.watchCmd()
}

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	cmd := m.update(msg)
	m.syncScroll()
	return m, cmd
}

func (m *Model) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.filter.SetWidth(max(10, msg.Width-4))
		m.execIn.SetWidth(max(10, msg.Width-20))
		m.form.setWidth(msg.Width)
		return nil
	case tea.KeyPressMsg:
		return m.handleKey(msg)
	case tea.PasteMsg:
		return m.handlePaste(msg)
	case tea.MouseClickMsg:
		return m.handleClick(msg.Mouse())
	case tea.MouseWheelMsg:
		return m.handleWheel(msg.Mouse())

	case infoMsg:
		if msg.err == nil {
			m.methods = map[string]bool{}
			for _, name := range msg.info.Methods {
				m.methods[name] = true
			}
		}
		return nil
	case vmListMsg:
		return m.applyVMList(msg)
	case imageListMsg:
		if msg.err != nil {
			m.setErr("list images", msg.err)
			return nil
		}
		m.images = msg.images
		return m.fixSelection()
	case vmShowMsg:
		return m.applyShow(msg)
	case logsMsg:
		if msg.name != m.selVM {
			return nil
		}
		m.logName, m.logText, m.logErr = msg.name, "", ""
		if msg.err != nil {
			m.logErr = errText(msg.err)
		} else {
			m.logText = msg.logs.Text
		}
		return nil
	case logTickMsg:
		// Only the selected, running VM's serial log grows; follow it
		// while it is on screen. A newer selection starts its own chain.
		if msg.gen != m.logGen {
			return nil
		}
		if vm, ok := m.vm(m.selVM); ok && vm.State == api.VMRunning && m.view == viewVMs {
			return tea.Batch(m.fetchLogs(vm.Name), m.after(logFollowEvery, logTickMsg{gen: msg.gen}))
		}
		return nil

	case watchEventMsg:
		return m.applyEvent(msg.ev)
	case watchEndedMsg:
		return m.watchEnded(msg.err)
	case watchRetryMsg:
		return m.watchCmd()

	case progressMsg:
		if op, ok := m.ops[msg.op]; ok {
			op.last = msg.ev
			op.hasEvent = true
		}
		return nil
	case opDoneMsg:
		return m.finishOp(msg)
	case spinMsg:
		if len(m.ops) == 0 {
			return nil
		}
		m.spin++
		return m.after(spinEvery, spinMsg{})
	case shellChosenMsg:
		return m.openShell(msg)
	case shellDoneMsg:
		if msg.err != nil {
			m.setErr(msg.what, msg.err)
		}
		return nil
	}
	return nil
}

// setErr shows err inline (the UI never exits on a daemon error).
func (m *Model) setErr(what string, err error) {
	m.info = ""
	m.err = opError{what: what, err: err}
}

// opError prefixes an error with the action that failed and keeps the
// daemon's hint reachable.
type opError struct {
	what string
	err  error
}

func (e opError) Error() string { return e.what + ": " + errText(e.err) }
func (e opError) Unwrap() error { return e.err }

// errText is err's sentence plus the daemon's hint, on one line.
func errText(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.Hint != "" {
		return err.Error() + " (hint: " + ae.Hint + ")"
	}
	return err.Error()
}
