package tui

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
)

// fakeClient is an in-memory daemon. Every call is recorded; a method can
// be told to fail, to emit progress events first, or to hold ("park") until
// the test releases it, which is how tests see an operation in flight.
type fakeClient struct {
	mu       sync.Mutex
	info     api.DaemonInfo
	infoErr  error
	vms      []api.VM
	images   []api.Image
	logs     map[string]string
	calls    []string
	errs     map[string]error       // by method
	progress map[string][]api.Event // by method, sent before the result
	holds    map[string]chan struct{}
	created  []api.VMCreateRequest
	built    []api.ImageBuildRequest
	sshInfo  map[string]api.VMSSHInfo
	// agentSock is a real guest agent's socket (startAgent) for VMExec.
	agentSock    string
	agentClients []*agent.Client

	// watchFirst is what WatchEvents sends when it starts; watchErr, if
	// set, ends it right after.
	watchFirst []api.Event
	watchErr   error
	watchPanic bool

	parked chan string // a held call (or the live watch) is waiting
	push   chan api.Event
	pushed chan struct{}
	end    chan error
}

func newFake() *fakeClient {
	return &fakeClient{
		info:       api.DaemonInfo{Methods: []string{api.MethodVMList, api.MethodEventsWatch}},
		logs:       map[string]string{},
		sshInfo:    map[string]api.VMSSHInfo{},
		errs:       map[string]error{},
		progress:   map[string][]api.Event{},
		holds:      map[string]chan struct{}{},
		watchFirst: []api.Event{{Kind: kindWatchStarted}},
		parked:     make(chan string, 16),
		push:       make(chan api.Event),
		pushed:     make(chan struct{}),
		end:        make(chan error),
	}
}

// hold makes the next calls of method wait until release.
func (f *fakeClient) hold(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holds[method] = make(chan struct{})
}

func (f *fakeClient) release(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.holds[method])
	delete(f.holds, method)
}

// enter records a call and sends its progress; it returns a channel to wait
// on if the method is held, and the configured error.
func (f *fakeClient) enter(method, arg string, onEvent func(api.Event)) (chan struct{}, error) {
	f.mu.Lock()
	f.calls = append(f.calls, strings.TrimSpace(method+" "+arg))
	evs, err, hold := f.progress[method], f.errs[method], f.holds[method]
	f.mu.Unlock()
	for _, ev := range evs {
		if onEvent != nil {
			ev.VM = arg
			onEvent(ev)
		}
	}
	return hold, err
}

// wait parks the call until the test releases it.
func (f *fakeClient) wait(ctx context.Context, method string, hold chan struct{}) error {
	if hold == nil {
		return nil
	}
	f.parked <- method
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeClient) called(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == prefix || strings.HasPrefix(c, prefix+" ") {
			n++
		}
	}
	return n
}

func (f *fakeClient) call(ctx context.Context, method, arg string, onEvent func(api.Event)) error {
	hold, err := f.enter(method, arg, onEvent)
	if werr := f.wait(ctx, method, hold); werr != nil {
		return werr
	}
	return err
}

func (f *fakeClient) DaemonInfo(ctx context.Context) (api.DaemonInfo, error) {
	if err := f.call(ctx, api.MethodDaemonInfo, "", nil); err != nil {
		return api.DaemonInfo{}, err
	}
	return f.info, f.infoErr
}

func (f *fakeClient) VMList(ctx context.Context) ([]api.VM, error) {
	if err := f.call(ctx, api.MethodVMList, "", nil); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vms), nil
}

func (f *fakeClient) find(name string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, vm := range f.vms {
		if vm.Name == name {
			return i, nil
		}
	}
	return -1, api.Errorf(api.CodeNotFound, "no VM named %q", name)
}

func (f *fakeClient) VMShow(ctx context.Context, name string) (api.VM, error) {
	if err := f.call(ctx, api.MethodVMShow, name, nil); err != nil {
		return api.VM{}, err
	}
	i, err := f.find(name)
	if err != nil {
		return api.VM{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vms[i], nil
}

func (f *fakeClient) setState(name string, st api.VMState) (api.VM, error) {
	i, err := f.find(name)
	if err != nil {
		return api.VM{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms[i].State = st
	return f.vms[i], nil
}

func (f *fakeClient) VMCreate(ctx context.Context, req api.VMCreateRequest, onEvent func(api.Event)) (api.VM, error) {
	f.mu.Lock()
	f.created = append(f.created, req)
	f.mu.Unlock()
	if err := f.call(ctx, api.MethodVMCreate, req.Name, onEvent); err != nil {
		return api.VM{}, err
	}
	vm := api.VM{ID: "vm-" + req.Name, Name: req.Name, State: api.VMRunning, Image: req.Image, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, DiskSizeBytes: req.DiskSizeBytes}
	f.mu.Lock()
	f.vms = append(f.vms, vm)
	f.mu.Unlock()
	return vm, nil
}

func (f *fakeClient) VMStart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error) {
	if err := f.call(ctx, api.MethodVMStart, name, onEvent); err != nil {
		return api.VM{}, err
	}
	return f.setState(name, api.VMRunning)
}

func (f *fakeClient) VMStop(ctx context.Context, req api.VMStopRequest, onEvent func(api.Event)) (api.VM, error) {
	arg := req.Name
	if req.Force {
		arg += " force"
	}
	if err := f.call(ctx, api.MethodVMStop, arg, onEvent); err != nil {
		return api.VM{}, err
	}
	return f.setState(req.Name, api.VMStopped)
}

func (f *fakeClient) VMRestart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error) {
	if err := f.call(ctx, api.MethodVMRestart, name, onEvent); err != nil {
		return api.VM{}, err
	}
	return f.setState(name, api.VMRunning)
}

func (f *fakeClient) VMDelete(ctx context.Context, req api.VMDeleteRequest, onEvent func(api.Event)) error {
	name := req.Name
	if err := f.call(ctx, api.MethodVMDelete, name, onEvent); err != nil {
		return err
	}
	i, err := f.find(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms = slices.Delete(f.vms, i, i+1)
	return nil
}

func (f *fakeClient) VMPause(ctx context.Context, name string) (api.VM, error) {
	if err := f.call(ctx, api.MethodVMPause, name, nil); err != nil {
		return api.VM{}, err
	}
	return f.setState(name, api.VMPaused)
}

func (f *fakeClient) VMResume(ctx context.Context, name string) (api.VM, error) {
	if err := f.call(ctx, api.MethodVMResume, name, nil); err != nil {
		return api.VM{}, err
	}
	return f.setState(name, api.VMRunning)
}

func (f *fakeClient) VMSnapshot(ctx context.Context, req api.VMSnapshotRequest, onEvent func(api.Event)) (api.Snapshot, error) {
	if err := f.call(ctx, api.MethodVMSnapshot, req.Name, onEvent); err != nil {
		return api.Snapshot{}, err
	}
	return api.Snapshot{Name: req.Name + "-20261207-210000", VM: req.Name, State: api.SnapshotReady, SizeBytes: 300 << 20}, nil
}

func (f *fakeClient) VMLogs(ctx context.Context, req api.VMLogsRequest) (api.VMLogs, error) {
	if err := f.call(ctx, api.MethodVMLogs, req.Name, nil); err != nil {
		return api.VMLogs{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.VMLogs{Path: "/state/vms/" + req.Name + "/serial.log", Text: f.logs[req.Name]}, nil
}

func (f *fakeClient) ImageList(ctx context.Context) ([]api.Image, error) {
	if err := f.call(ctx, api.MethodImageList, "", nil); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.images), nil
}

func (f *fakeClient) ImageBuild(ctx context.Context, req api.ImageBuildRequest, onEvent func(api.Event)) (api.Image, error) {
	f.mu.Lock()
	f.built = append(f.built, req)
	f.mu.Unlock()
	if err := f.call(ctx, api.MethodImageBuild, req.Name, onEvent); err != nil {
		return api.Image{}, err
	}
	im := api.Image{ID: "img-" + req.Name, Name: req.Name, Source: "build", SizeBytes: req.SizeBytes}
	f.mu.Lock()
	f.images = append(f.images, im)
	f.mu.Unlock()
	return im, nil
}

func (f *fakeClient) ImageDelete(ctx context.Context, name string) error {
	return f.call(ctx, api.MethodImageDelete, name, nil)
}

// WatchEvents sends watchFirst, then stays live: the test pushes events
// with push and ends the stream with end.
func (f *fakeClient) WatchEvents(ctx context.Context, onEvent func(api.Event)) error {
	if f.watchPanic {
		panic("fake: watch exploded")
	}
	_, err := f.enter(api.MethodEventsWatch, "", nil)
	for _, ev := range f.watchFirst {
		onEvent(ev)
	}
	if err != nil {
		return err
	}
	if f.watchErr != nil {
		return f.watchErr
	}
	f.parked <- api.MethodEventsWatch
	for {
		select {
		case ev := <-f.push:
			onEvent(ev)
			f.pushed <- struct{}{}
		case err := <-f.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// VMExec runs the command for real, in a real guest agent serving on a
// Unix socket (startAgent), so the TUI reads a genuine exec stream.
func (f *fakeClient) VMExec(ctx context.Context, req api.VMExecRequest) (*agent.Process, error) {
	if err := f.call(ctx, api.MethodVMExec, req.Name+" "+strings.Join(req.Argv, " "), nil); err != nil {
		return nil, err
	}
	if !slices.Contains(f.info.Methods, api.MethodVMExec) {
		return nil, api.Errorf(api.CodeNotFound, "unknown API method %q", api.MethodVMExec)
	}
	if f.agentSock == "" {
		return nil, errors.New("fake: no agent started (startAgent)")
	}
	conn, err := net.Dial("unix", f.agentSock)
	if err != nil {
		return nil, err
	}
	c, err := agent.NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	f.mu.Lock()
	f.agentClients = append(f.agentClients, c)
	f.mu.Unlock()
	stream, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{Argv: req.Argv, Env: req.Env, Dir: req.Dir, TTY: req.TTY}})
	if err != nil {
		return nil, err
	}
	return agent.NewProcess(stream), nil
}

// startAgent serves a real guest agent for VMExec until the test ends.
func (f *fakeClient) startAgent(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	ln, err := agent.Listen("unix:" + filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &agent.Server{Root: dir, Power: func(string) error { return nil }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		f.mu.Lock()
		for _, c := range f.agentClients {
			_ = c.Close()
		}
		f.mu.Unlock()
		ln.Close()
		<-done
	})
	f.agentSock = filepath.Join(dir, "agent.sock")
}

func (f *fakeClient) VMSSHInfo(ctx context.Context, name string) (api.VMSSHInfo, error) {
	if err := f.call(ctx, api.MethodVMSSHInfo, name, nil); err != nil {
		return api.VMSSHInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sshInfo[name], nil
}
