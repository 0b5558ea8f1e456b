package tui

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/termtext"
)

// operation is a daemon call in flight (create, start, exec, ...). Its
// progress events are shown in the status line until it finishes.
type operation struct {
	verb, target string
	started      time.Time
	last         api.Event
	hasEvent     bool
	// done runs in Update when the call returned; it decides what the user
	// sees and what to reload.
	done func(err error) tea.Cmd
}

// startOp runs call in the background, reporting progress to the status line.
func (m *Model) startOp(verb, target string, call func(ctx context.Context, onEvent func(api.Event)) error, done func(err error) tea.Cmd) tea.Cmd {
	m.nextOp++
	id := m.nextOp
	m.ops[id] = &operation{verb: verb, target: target, started: m.now(), done: done}
	m.err, m.info = nil, ""
	ctx := m.ctx
	cmds := []tea.Cmd{func() tea.Msg {
		err := call(ctx, func(ev api.Event) { m.post(progressMsg{op: id, ev: ev}) })
		m.post(opDoneMsg{op: id, err: err})
		return nil
	}}
	if len(m.ops) == 1 {
		cmds = append(cmds, m.after(spinEvery, spinMsg{}))
	}
	return tea.Batch(cmds...)
}

func (m *Model) finishOp(msg opDoneMsg) tea.Cmd {
	op, ok := m.ops[msg.op]
	if !ok {
		return nil
	}
	delete(m.ops, msg.op)
	return op.done(msg.err)
}

// vmOpDone is the usual ending of a VM action: report, then reload the VM.
// Without a live event stream the whole list is reloaded, since nothing
// else would tell us about side effects.
func (m *Model) vmOpDone(verb, name, doneText string) func(error) tea.Cmd {
	return func(err error) tea.Cmd {
		if err != nil {
			m.setErr(verb+" "+name, err)
		} else {
			m.info = name + ": " + doneText
		}
		if !m.live {
			return m.refreshAll()
		}
		return m.showVM(name)
	}
}

// selectedVM is the VM under the cursor, if any.
func (m *Model) selectedVM() (api.VM, bool) {
	if m.view != viewVMs || m.selVM == "" {
		return api.VM{}, false
	}
	return m.vm(m.selVM)
}

func (m *Model) startVM(name string) tea.Cmd {
	return m.startOp("start", name, func(ctx context.Context, on func(api.Event)) error {
		_, err := m.client.VMStart(ctx, name, on)
		return err
	}, m.vmOpDone("start", name, "running"))
}

func (m *Model) stopVM(name string, force bool) tea.Cmd {
	verb := "stop"
	if force {
		verb = "force stop"
	}
	return m.startOp(verb, name, func(ctx context.Context, on func(api.Event)) error {
		_, err := m.client.VMStop(ctx, api.VMStopRequest{Name: name, Force: force}, on)
		return err
	}, m.vmOpDone(verb, name, "stopped"))
}

func (m *Model) restartVM(name string) tea.Cmd {
	return m.startOp("restart", name, func(ctx context.Context, on func(api.Event)) error {
		_, err := m.client.VMRestart(ctx, name, on)
		return err
	}, m.vmOpDone("restart", name, "running"))
}

// lacks reports, and says, that the daemon is known to have no method
// (one from before the feature): what names the feature ("exec is").
func (m *Model) lacks(method, what string) bool {
	if m.methods == nil || m.methods[method] {
		return false
	}
	m.err, m.info = nil, what+" not available yet: this daemon has no "+method
	return true
}

// requireRunning says what to press when vm cannot take an exec or a
// shell, and reports whether it can.
func (m *Model) requireRunning(vm api.VM) bool {
	switch vm.State {
	case api.VMRunning:
		return true
	case api.VMPaused:
		m.err, m.info = nil, fmt.Sprintf("%s is paused; resume it first (p)", vm.Name)
	default:
		m.err, m.info = nil, fmt.Sprintf("%s is %s; start it first (s)", vm.Name, vm.State)
	}
	return false
}

// togglePause pauses a running VM and resumes a paused one.
func (m *Model) togglePause(vm api.VM) tea.Cmd {
	name := vm.Name
	if m.lacks(api.MethodVMPause, "pausing is") {
		return nil
	}
	switch vm.State {
	case api.VMRunning:
		return m.startOp("pause", name, func(ctx context.Context, _ func(api.Event)) error {
			_, err := m.client.VMPause(ctx, name)
			return err
		}, m.vmOpDone("pause", name, "paused"))
	case api.VMPaused:
		return m.startOp("resume", name, func(ctx context.Context, _ func(api.Event)) error {
			_, err := m.client.VMResume(ctx, name)
			return err
		}, m.vmOpDone("resume", name, "running"))
	}
	m.err, m.info = nil, fmt.Sprintf("%s is %s; only a running VM can be paused", name, vm.State)
	return nil
}

// snapshotVM saves the selected VM's state under the default name; the
// CLI (`banger vm snapshot --name`) names it otherwise.
func (m *Model) snapshotVM(vm api.VM) tea.Cmd {
	name := vm.Name
	if m.lacks(api.MethodVMSnapshot, "snapshots are") {
		return nil
	}
	if vm.State != api.VMRunning && vm.State != api.VMPaused {
		m.err, m.info = nil, fmt.Sprintf("%s is %s; only a running or paused VM can be snapshotted", name, vm.State)
		return nil
	}
	var saved api.Snapshot
	return m.startOp("snapshot", name, func(ctx context.Context, on func(api.Event)) error {
		var err error
		saved, err = m.client.VMSnapshot(ctx, api.VMSnapshotRequest{Name: name}, on)
		return err
	}, func(err error) tea.Cmd {
		if err == nil {
			m.info = fmt.Sprintf("%s: saved snapshot %s (%s)", name, termtext.Line(saved.Name), config.FormatBytes(saved.SizeBytes))
		} else {
			m.setErr("snapshot "+name, err)
		}
		if !m.live {
			return m.refreshAll()
		}
		return m.showVM(name)
	})
}

func (m *Model) deleteVM(name string) tea.Cmd {
	return m.startOp("delete", name, func(ctx context.Context, on func(api.Event)) error {
		// The question named the snapshots, so they may go too.
		return m.client.VMDelete(ctx, api.VMDeleteRequest{Name: name, Force: true}, on)
	}, func(err error) tea.Cmd {
		if err != nil {
			m.setErr("delete "+name, err)
			return m.showVM(name)
		}
		m.info = name + ": deleted"
		m.applyStateChange(api.Event{Kind: kindVMDeleted, VM: name})
		return tea.Batch(m.fixSelection(), m.refreshImages())
	})
}

func (m *Model) createVM(req api.VMCreateRequest) tea.Cmd {
	return m.startOp("create", req.Name, func(ctx context.Context, on func(api.Event)) error {
		_, err := m.client.VMCreate(ctx, req, on)
		return err
	}, func(err error) tea.Cmd {
		// A request the daemon refused goes back into the form, values
		// kept, so the user fixes one field instead of retyping all.
		if api.IsCode(err, api.CodeInvalidArgument) || api.IsCode(err, api.CodeAlreadyExists) {
			m.form.err = errText(err)
			m.mode = modeForm
			m.form.focusField(m.form.focus)
			return nil
		}
		cmd := m.vmOpDone("create", req.Name, "created")(err)
		if err == nil {
			m.form = form{}
			m.selVM = req.Name
			return tea.Batch(cmd, m.followLogs())
		}
		return cmd
	})
}

// buildImage runs an image build; its stages show in the status line and
// the images view for the minutes it takes.
func (m *Model) buildImage(req api.ImageBuildRequest) tea.Cmd {
	return m.startOp("build image", req.Name, func(ctx context.Context, on func(api.Event)) error {
		_, err := m.client.ImageBuild(ctx, req, on)
		return err
	}, func(err error) tea.Cmd {
		switch {
		case isUnknownMethod(err):
			m.info = "image builds are not available yet: this daemon has no image.build"
		case api.IsCode(err, api.CodeInvalidArgument) || api.IsCode(err, api.CodeAlreadyExists):
			m.form.err = errText(err)
			m.mode = modeForm
			m.form.focusField(buildName)
		case err != nil:
			m.setErr("build image "+req.Name, err)
		default:
			m.form = form{}
			m.info = "image " + req.Name + ": built"
			m.selImage = req.Name
		}
		return m.refreshImages()
	})
}

func (m *Model) deleteImage(name string) tea.Cmd {
	return m.startOp("delete image", name, func(ctx context.Context, _ func(api.Event)) error {
		return m.client.ImageDelete(ctx, name)
	}, func(err error) tea.Cmd {
		if err != nil {
			m.setErr("delete image "+name, err)
		} else {
			m.info = "image " + name + ": deleted"
		}
		return m.refreshImages()
	})
}

// openExec asks for a command line to run in the selected VM.
func (m *Model) openExec() tea.Cmd {
	vm, ok := m.selectedVM()
	if !ok {
		return nil
	}
	if m.lacks(api.MethodVMExec, "exec is") {
		return nil
	}
	if !m.requireRunning(vm) {
		return nil
	}
	m.mode = modeExecPrompt
	m.execIn.Reset()
	m.execIn.Focus()
	return nil
}

func (m *Model) runExec(name, command string) tea.Cmd {
	var res execResult
	return m.startOp("exec", name, func(ctx context.Context, _ func(api.Event)) error {
		var err error
		res, err = runExec(ctx, m.client, name, command)
		return err
	}, func(err error) tea.Cmd {
		switch {
		case isUnknownMethod(err):
			m.info = "exec is not available yet: this daemon has no vm.exec"
		case err != nil:
			m.setErr("exec in "+name, err)
		default:
			m.execOut = &execOutput{vm: name, command: command, res: res}
			m.mode = modeExecOutput
		}
		return nil
	})
}

// shell opens an interactive session in the selected VM, suspending the
// TUI while it runs: ssh when the VM can take it, else a login shell
// through the guest agent (`banger vm exec -t`), which needs neither an
// sshd nor a network. Whether ssh can work is a daemon call, so the choice
// arrives as a shellChosenMsg.
func (m *Model) shell() tea.Cmd {
	vm, ok := m.selectedVM()
	if !ok {
		return nil
	}
	if m.sshCommand == nil && m.shellCommand == nil {
		m.err, m.info = nil, "shells are not available yet: this banger has neither `vm ssh` nor `vm exec`"
		return nil
	}
	if !m.requireRunning(vm) {
		return nil
	}
	if m.shellCommand == nil {
		return m.openShell(shellChosenMsg{vm: vm.Name, ssh: true})
	}
	if m.sshCommand == nil {
		return m.openShell(shellChosenMsg{vm: vm.Name})
	}
	ctx, client := m.ctx, m.client
	return func() tea.Msg {
		return shellChosenMsg{vm: vm.Name, ssh: sshReady(ctx, client, vm)}
	}
}

// openShell runs the chosen session in the terminal.
func (m *Model) openShell(msg shellChosenMsg) tea.Cmd {
	cmd, via := m.shellCommand, "shell in "
	if msg.ssh {
		cmd, via = m.sshCommand, "ssh "
	}
	what := via + msg.vm
	return tea.ExecProcess(cmd(msg.vm), func(err error) tea.Msg { return shellDoneMsg{what: what, err: err} })
}

// ask shows a yes/no question; run happens only on y.
func (m *Model) ask(prompt string, run func() tea.Cmd) tea.Cmd {
	m.confirm = &confirmation{prompt: prompt, run: run}
	m.mode = modeConfirm
	return nil
}

// opsSummary names the operations still running, for the quit question.
func (m *Model) opsSummary() string {
	var parts []string
	for _, op := range m.sortedOps() {
		parts = append(parts, op.verb+" "+op.target)
	}
	return strings.Join(parts, ", ")
}

// sortedOps lists running operations oldest first.
func (m *Model) sortedOps() []*operation {
	ids := slices.Sorted(maps.Keys(m.ops))
	out := make([]*operation, 0, len(ids))
	for _, id := range ids {
		out = append(out, m.ops[id])
	}
	return out
}
