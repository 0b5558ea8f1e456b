package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/store"
)

// VM lifetimes: `vm create --ttl 30m` deletes (or, with --ttl-action stop,
// stops) the VM 30 minutes after it was made; `--idle-ttl 10m` once it has
// run for 10 minutes without activity. The limits live in the store
// (store.Lifetime), so a daemon that starts re-arms them, and a VM that
// became due while no daemon ran is handled at once.
//
// Activity is what the daemon can see: an exec, copy, sync or `vm ssh`
// lookup (access.running), a stream of exec or copy still open (busy), and
// a TCP connection from the host to the VM's address (an ssh session, a
// port forward's connection), checked when the idle limit is reached. The
// idle clock of a VM that was running when the daemon started starts with
// the daemon: activity is not stored.

// ttlRetry is how long a VM whose delete or stop failed waits for the next
// try; idleRecheck bounds the scheduler's sleep, so connections that end
// are noticed.
const (
	ttlRetry    = time.Minute
	idleRecheck = time.Minute
)

// lifetimes schedules the end of VMs whose lifetime is limited.
type lifetimes struct {
	log   *slog.Logger
	store *store.Store
	now   func() time.Time
	// end deletes or stops (action) the VM with id.
	end func(ctx context.Context, id, action string) error
	// running reports whether the VM's VMM runs (idle limits apply only
	// then); connected whether the host has a TCP connection open to it.
	running   func(id string) bool
	connected func(ctx context.Context, id string) bool

	mu         sync.Mutex
	limits     map[string]store.Lifetime
	lastActive map[string]time.Time
	busy       map[string]int
	retryAt    map[string]time.Time
	started    time.Time
	wake       chan struct{}
}

func newLifetimes(log *slog.Logger, st *store.Store, now func() time.Time) *lifetimes {
	return &lifetimes{
		log: log.With("component", "ttl"), store: st, now: now,
		limits: map[string]store.Lifetime{}, lastActive: map[string]time.Time{},
		busy: map[string]int{}, retryAt: map[string]time.Time{},
		wake:      make(chan struct{}, 1),
		running:   func(string) bool { return false },
		connected: func(context.Context, string) bool { return false },
	}
}

// load reads every limited lifetime from the store (daemon start).
func (t *lifetimes) load(ctx context.Context) error {
	limits, err := t.store.VMLifetimes(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.limits, t.started = limits, t.now()
	t.mu.Unlock()
	t.poke()
	return nil
}

// poke wakes the scheduler to recompute its next deadline.
func (t *lifetimes) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// set stores and arms a VM's lifetime (an unlimited one disarms it).
func (t *lifetimes) set(ctx context.Context, id string, l store.Lifetime) error {
	if err := t.store.SetVMLifetime(ctx, id, l); err != nil {
		return err
	}
	t.mu.Lock()
	if l.Action == "" {
		l.Action = store.TTLDelete
	}
	if l.Limited() {
		t.limits[id] = l
	} else {
		delete(t.limits, id)
	}
	delete(t.retryAt, id)
	t.mu.Unlock()
	t.poke()
	return nil
}

// get is the VM's lifetime (zero: unlimited).
func (t *lifetimes) get(id string) store.Lifetime {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limits[id]
}

// touch records activity on the VM now.
func (t *lifetimes) touch(id string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.lastActive[id] = t.now()
	t.mu.Unlock()
}

// begin marks the VM busy (an exec or copy stream open) until the
// returned function is called; both ends count as activity.
func (t *lifetimes) begin(id string) (end func()) {
	t.mu.Lock()
	t.busy[id]++
	t.lastActive[id] = t.now()
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			if t.busy[id]--; t.busy[id] <= 0 {
				delete(t.busy, id)
			}
			t.lastActive[id] = t.now()
			t.mu.Unlock()
		})
	}
}

// due is when the VM's lifetime ends, and whether that is its idle limit;
// zero when it does not end (an unlimited VM, or an idle limit on a VM
// that is not running or is busy).
func (t *lifetimes) due(id string, l store.Lifetime) (at time.Time, idle bool) {
	at = l.ExpiresAt
	if l.IdleTTL > 0 && t.busy[id] == 0 && t.running(id) {
		since := t.started
		if a := t.lastActive[id]; a.After(since) {
			since = a
		}
		if idleAt := since.Add(l.IdleTTL); at.IsZero() || idleAt.Before(at) {
			at, idle = idleAt, true
		}
	}
	if r, ok := t.retryAt[id]; ok && !at.IsZero() && r.After(at) {
		at = r
	}
	return at, idle
}

// runDue ends every VM whose time has come and returns the next deadline
// (zero if none).
func (t *lifetimes) runDue(ctx context.Context) time.Time {
	now := t.now()
	type work struct {
		id   string
		l    store.Lifetime
		idle bool
	}
	var todo []work
	var next time.Time
	t.mu.Lock()
	for id, l := range t.limits {
		at, idle := t.due(id, l)
		switch {
		case at.IsZero():
		case !at.After(now):
			todo = append(todo, work{id, l, idle})
		case next.IsZero() || at.Before(next):
			next = at
		}
	}
	t.mu.Unlock()
	for _, w := range todo {
		if w.idle && t.connected(ctx, w.id) {
			t.touch(w.id)
			continue
		}
		if err := t.expire(ctx, w.id, w.l, w.idle); err != nil {
			t.log.Warn("could not end a VM whose time was up; trying again later", "vm_id", w.id, "action", w.l.Action, "err", err)
			t.mu.Lock()
			t.retryAt[w.id] = now.Add(ttlRetry)
			t.mu.Unlock()
		}
	}
	if len(todo) > 0 {
		// What was due may have changed the schedule (retries, stops).
		return now
	}
	return next
}

// expire deletes or stops a VM whose lifetime ended. A stop because the
// TTL (not the idle limit) ran out also clears the TTL, or the VM would
// be stopped again as soon as it is started; a VM already gone is simply
// forgotten.
func (t *lifetimes) expire(ctx context.Context, id string, l store.Lifetime, idle bool) error {
	reason := "ttl"
	if idle {
		reason = "idle ttl"
	}
	t.log.Info("VM's time is up", "vm_id", id, "reason", reason, "action", l.Action)
	if l.Action == store.TTLStop && !idle && !t.running(id) {
		return t.disarmTTL(ctx, id, l)
	}
	err := t.end(ctx, id, l.Action)
	if errors.Is(err, errVMGone) {
		t.forget(id)
		return nil
	}
	if err != nil {
		return err
	}
	if l.Action == store.TTLDelete {
		t.forget(id)
		return nil
	}
	if !idle {
		return t.disarmTTL(ctx, id, l)
	}
	return nil
}

// disarmTTL clears the VM's TTL and keeps its idle limit.
func (t *lifetimes) disarmTTL(ctx context.Context, id string, l store.Lifetime) error {
	l.ExpiresAt = time.Time{}
	return t.set(ctx, id, l)
}

// forget drops a deleted VM.
func (t *lifetimes) forget(id string) {
	t.mu.Lock()
	delete(t.limits, id)
	delete(t.lastActive, id)
	delete(t.busy, id)
	delete(t.retryAt, id)
	t.mu.Unlock()
}

// run ends VMs as they become due until ctx ends.
func (t *lifetimes) run(ctx context.Context) {
	for {
		next := t.runDue(ctx)
		wait := idleRecheck
		if !next.IsZero() {
			wait = min(max(next.Sub(t.now()), 0), idleRecheck)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-t.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// during wraps an exec or copy relay: the VM is busy while it runs.
func (t *lifetimes) during(id string, r api.Relay) api.Relay {
	if t == nil {
		return r
	}
	return func(conn io.ReadWriteCloser) {
		end := t.begin(id)
		defer end()
		r(conn)
	}
}

// view is the VM's lifetime for the API; nil when unlimited.
func (t *lifetimes) view(id string) *api.Lifetime {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.limits[id]
	if !ok {
		return nil
	}
	out := &api.Lifetime{IdleTTLSeconds: int64(l.IdleTTL / time.Second), Action: l.Action}
	if !l.ExpiresAt.IsZero() {
		at := l.ExpiresAt
		out.ExpiresAt = &at
	}
	if at, idle := t.due(id, store.Lifetime{IdleTTL: l.IdleTTL}); idle {
		out.IdleExpiresAt = &at
	}
	return out
}

// errVMGone means the VM to end no longer exists.
var errVMGone = errors.New("vm no longer exists")

// startLifetimes loads the VMs' lifetimes into d.ttl (made before the
// VM manager, which holds it) and runs the scheduler until the returned
// stop is called (when Run returns).
func (d *Daemon) startLifetimes(ctx context.Context) (stop func(), err error) {
	t := d.ttl
	t.end = d.vms.endVM
	t.running = func(id string) bool { return d.vms.instance(id) != nil }
	t.connected = d.vms.hostConnected
	if err := t.load(ctx); err != nil {
		return nil, fmt.Errorf("load VM lifetimes: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}, nil
}

// armLifetime sets a new VM's lifetime once it exists.
func (m *vmManager) armLifetime(ctx context.Context, vm lifecycle.VM, l store.Lifetime) error {
	if !l.Limited() || m.ttl == nil {
		return nil
	}
	if err := m.ttl.set(ctx, vm.ID, l); err != nil {
		return api.Errorf(api.CodeInternal, "vm %s was created, but its time to live was not set: %v", vm.Name, err).
			WithHint("set it with `banger vm ttl " + vm.Name + " DURATION`")
	}
	return nil
}

// parseLifetime reads a create request's limits, relative to now.
func parseLifetime(ttl, idle int64, action string, now time.Time) (store.Lifetime, error) {
	if ttl < 0 || idle < 0 {
		return store.Lifetime{}, api.Errorf(api.CodeInvalidArgument, "a time to live must be positive, not %ds", min(ttl, idle)).
			WithHint("write it as a duration such as 30m or 2h")
	}
	switch action {
	case "", store.TTLDelete, store.TTLStop:
	default:
		return store.Lifetime{}, api.Errorf(api.CodeInvalidArgument, "ttl action %q is not delete or stop", action)
	}
	l := store.Lifetime{IdleTTL: time.Duration(idle) * time.Second, Action: action}
	if ttl > 0 {
		l.ExpiresAt = now.Add(time.Duration(ttl) * time.Second)
	}
	return l, nil
}

// endVM is the lifetimes' end over the lifecycle: delete (with the VM's
// snapshots: a VM made to expire takes its snapshots with it) or a
// graceful stop.
func (m *vmManager) endVM(ctx context.Context, id, action string) error {
	quiet := func(lifecycle.Report) {}
	var err error
	if action == store.TTLDelete {
		err = m.lc.Delete(ctx, id, true, quiet)
	} else {
		_, err = m.lc.Stop(ctx, id, false, 0, quiet)
	}
	if _, gone := m.store.GetVM(ctx, id); errors.Is(gone, store.ErrNotFound) {
		return errVMGone
	}
	return err
}

// TTL sets or clears a VM's lifetime (`banger vm ttl`).
func (m *vmManager) TTL(ctx context.Context, req api.VMTTLRequest, _ api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VM{}, err
	}
	if m.ttl == nil {
		return api.VM{}, api.Errorf(api.CodeUnavailable, "this daemon does not schedule VM lifetimes")
	}
	cur := m.ttl.get(vm.ID)
	idle := int64(cur.IdleTTL / time.Second)
	if req.IdleTTLSeconds != nil {
		idle = *req.IdleTTLSeconds
	}
	action := req.Action
	if action == "" {
		action = cur.Action
	}
	l, err := parseLifetime(req.TTLSeconds, idle, action, m.now())
	if err != nil {
		return api.VM{}, err
	}
	if err := m.ttl.set(ctx, vm.ID, l); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, vm.ID)
}
