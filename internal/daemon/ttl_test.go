package daemon

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/store"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ttlRig is a lifetimes scheduler over a real store, with a fake clock and
// a record of the VMs it ended instead of a lifecycle.
type ttlRig struct {
	t       *testing.T
	st      *store.Store
	clock   *fakeClock
	mu      sync.Mutex
	ended   []string // "name action"
	running map[string]bool
	conns   map[string]bool
	names   map[string]string // id → name
}

func newTTLRig(t *testing.T) *ttlRig {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &ttlRig{t: t, st: st, clock: &fakeClock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)},
		running: map[string]bool{}, conns: map[string]bool{}, names: map[string]string{}}
}

// scheduler is a fresh scheduler, as a daemon starting over the store
// would make one.
func (r *ttlRig) scheduler() *lifetimes {
	r.t.Helper()
	l := newLifetimes(slog.New(slog.DiscardHandler), r.st, r.clock.Now)
	l.end = func(ctx context.Context, id, action string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ended = append(r.ended, r.names[id]+" "+action)
		if action == store.TTLStop {
			r.running[id] = false
			return nil
		}
		return r.st.DeleteVM(ctx, id)
	}
	l.running = func(id string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.running[id]
	}
	l.connected = func(_ context.Context, id string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.conns[id]
	}
	if err := l.load(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	return l
}

// vm creates a VM row named name, running or not.
func (r *ttlRig) vm(name string, running bool) string {
	r.t.Helper()
	vm := store.VM{ID: store.NewID(), Name: name, VCPUs: 1, MemoryMiB: 128, VMM: "firecracker"}
	if err := r.st.CreateVM(context.Background(), vm); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.names[vm.ID], r.running[vm.ID] = name, running
	r.mu.Unlock()
	return vm.ID
}

func (r *ttlRig) set(l *lifetimes, id string, ttl, idle time.Duration, action string) {
	r.t.Helper()
	life, err := parseLifetime(int64(ttl/time.Second), int64(idle/time.Second), action, r.clock.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	if err := l.set(context.Background(), id, life); err != nil {
		r.t.Fatal(err)
	}
}

// takeEnded returns and clears what was ended, sorted.
func (r *ttlRig) takeEnded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Sorted(slices.Values(r.ended))
	r.ended = nil
	return out
}

func (r *ttlRig) expectEnded(when string, want ...string) {
	r.t.Helper()
	if got := r.takeEnded(); !slices.Equal(got, want) {
		r.t.Errorf("%s: ended %q, want %q", when, got, want)
	}
}

func TestLifetimesEndDueVMs(t *testing.T) {
	r := newTTLRig(t)
	l := r.scheduler()
	ctx := context.Background()
	a, b, c := r.vm("a", false), r.vm("b", true), r.vm("c", true)
	r.set(l, a, 30*time.Minute, 0, "")
	r.set(l, b, 30*time.Minute, 0, store.TTLStop)
	r.set(l, c, time.Hour, 0, store.TTLDelete)

	r.clock.advance(29 * time.Minute)
	if next := l.runDue(ctx); !next.Equal(r.clock.Now().Add(time.Minute)) {
		t.Errorf("next deadline %v, want in one minute", next)
	}
	r.expectEnded("before the TTL")
	r.clock.advance(2 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("after the TTL", "a delete", "b stop")
	// b was stopped, and its TTL is spent: starting it again must not stop
	// it at once.
	lives, err := r.st.VMLifetimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lives[b]; ok {
		t.Errorf("b's TTL survived its stop: %+v", lives[b])
	}
	if l.view(a) != nil {
		t.Error("deleted VM a still has a lifetime")
	}
	r.clock.advance(10 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("after b's stop, before c's TTL")
	r.clock.advance(20 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("after c's TTL", "c delete")
}

// TestLifetimesRearmAfterRestart: a new scheduler over the same store (a
// daemon restart) keeps the deadlines, and ends at once what became due
// while no daemon ran.
func TestLifetimesRearmAfterRestart(t *testing.T) {
	r := newTTLRig(t)
	ctx := context.Background()
	first := r.scheduler()
	late, later := r.vm("late", true), r.vm("later", true)
	r.set(first, late, 30*time.Minute, 0, "")
	r.set(first, later, 2*time.Hour, 0, "")

	r.clock.advance(time.Hour) // the daemon is down for an hour
	second := r.scheduler()
	if v := second.view(later); v == nil || v.ExpiresAt == nil || !v.ExpiresAt.Equal(r.clock.Now().Add(time.Hour)) {
		t.Errorf("later's lifetime after the restart: %+v", v)
	}
	second.runDue(ctx)
	r.expectEnded("first run after the restart", "late delete")
	r.clock.advance(time.Hour)
	second.runDue(ctx)
	r.expectEnded("an hour later", "later delete")
}

func TestLifetimesExtendAndClear(t *testing.T) {
	r := newTTLRig(t)
	ctx := context.Background()
	l := r.scheduler()
	id, kept := r.vm("dev", true), r.vm("kept", true)
	r.set(l, id, 30*time.Minute, 0, "")
	r.set(l, kept, 30*time.Minute, 0, "")
	r.clock.advance(20 * time.Minute)
	r.set(l, id, time.Hour, 0, "")    // `vm ttl dev 1h`: an hour from now
	r.set(l, kept, 0, 0, "")          // `vm ttl kept none`
	r.clock.advance(30 * time.Minute) // 50 minutes after create
	l.runDue(ctx)
	r.expectEnded("past the first TTL")
	r.clock.advance(31 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("past the extended TTL", "dev delete")
	if lives, _ := r.st.VMLifetimes(ctx); len(lives) != 0 {
		t.Errorf("lifetimes left: %v", lives)
	}
}

func TestLifetimesIdle(t *testing.T) {
	r := newTTLRig(t)
	ctx := context.Background()
	l := r.scheduler()
	id, stopped := r.vm("idle", true), r.vm("stopped", false)
	r.set(l, id, 0, 10*time.Minute, store.TTLStop)
	r.set(l, stopped, 0, 10*time.Minute, "")

	r.clock.advance(9 * time.Minute)
	l.touch(id) // an exec
	r.clock.advance(6 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("15 minutes in, active at 9")

	end := l.begin(id) // a long exec stream
	r.clock.advance(time.Hour)
	l.runDue(ctx)
	r.expectEnded("while an exec runs")
	end()

	r.clock.advance(11 * time.Minute)
	r.mu.Lock()
	r.conns[id] = true // an ssh session from the host
	r.mu.Unlock()
	l.runDue(ctx)
	r.expectEnded("with a host connection open")
	r.mu.Lock()
	r.conns[id] = false
	r.mu.Unlock()
	r.clock.advance(9 * time.Minute)
	l.runDue(ctx)
	r.expectEnded("9 minutes after the connection was last seen")
	r.clock.advance(2 * time.Minute)
	l.runDue(ctx)
	// The stopped VM was never running: idle limits apply only to running
	// VMs. The idle VM stops and keeps its idle limit for its next run.
	r.expectEnded("idle for 10 minutes", "idle stop")
	if lives, _ := r.st.VMLifetimes(ctx); lives[id].IdleTTL != 10*time.Minute {
		t.Errorf("idle limit after the stop: %+v", lives[id])
	}
}

func TestParseLifetimeRefusesBadInput(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		ttl, idle int64
		action    string
	}{{-1, 0, ""}, {0, -5, ""}, {60, 0, "explode"}} {
		if _, err := parseLifetime(c.ttl, c.idle, c.action, now); err == nil {
			t.Errorf("parseLifetime(%d, %d, %q) accepted it", c.ttl, c.idle, c.action)
		}
	}
}

func TestConnectedToReadsProcNetTCP(t *testing.T) {
	// 172.30.0.2:22 established, 172.30.0.3:80 in TIME_WAIT, as a
	// little-endian kernel prints them; on a big-endian machine the bytes
	// of the address come in the other order.
	le := map[string]string{"2": "02001EAC", "3": "03001EAC"}
	if nativeBigEndian() {
		le = map[string]string{"2": "AC1E0002", "3": "AC1E0003"}
	}
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 01001EAC:D2F0 ` + le["2"] + `:0016 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 20 4 30 10 -1
   1: 01001EAC:A1B2 ` + le["3"] + `:0050 06 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 20 4 30 10 -1
`
	for addr, want := range map[string]bool{"172.30.0.2": true, "172.30.0.3": false, "172.30.0.4": false} {
		if got := connectedTo(strings.NewReader(table), netip.MustParseAddr(addr)); got != want {
			t.Errorf("connectedTo(%s) = %v, want %v", addr, got, want)
		}
	}
}

func nativeBigEndian() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 0
}
