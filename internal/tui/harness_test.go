package tui

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/banger-dev/banger/internal/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// epoch is the fake clock's "now".
func epoch() time.Time { return time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) }

// harness drives a Model the way Bubble Tea would, but one message at a
// time: each command runs to completion (or until the fake parks it), and
// what it produced is fed back in order. Nothing depends on timing.
type harness struct {
	t      *testing.T
	m      *Model
	fake   *fakeClient
	inbox  chan tea.Msg
	queue  []tea.Msg
	timers []tea.Msg
	// parked holds the result channels of commands the fake is holding.
	parked map[string]chan tea.Msg
	quit   bool
	now    time.Time
}

type harnessOpt func(*Options)

func newHarness(t *testing.T, fake *fakeClient, w, h int, opts ...harnessOpt) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hs := &harness{t: t, fake: fake, inbox: make(chan tea.Msg, inboxSize), parked: map[string]chan tea.Msg{}, now: epoch()}
	o := Options{Client: fake, Mouse: true, NoColor: true, SSHCommand: nil}
	for _, opt := range opts {
		opt(&o)
	}
	hs.m = newModel(ctx, o, deps{
		inbox: hs.inbox,
		now:   func() time.Time { return hs.now },
		after: func(_ time.Duration, msg tea.Msg) tea.Cmd {
			hs.timers = append(hs.timers, msg)
			return nil
		},
	})
	hs.send(tea.WindowSizeMsg{Width: w, Height: h})
	hs.exec(hs.m.Init())
	hs.pump()
	return hs
}

// send delivers msgs and everything they lead to.
func (h *harness) send(msgs ...tea.Msg) {
	h.queue = append(h.queue, msgs...)
	h.pump()
}

func (h *harness) pump() {
	h.t.Helper()
	for len(h.queue) > 0 {
		msg := h.queue[0]
		h.queue = h.queue[1:]
		switch msg := msg.(type) {
		case nil:
			continue
		case tea.BatchMsg:
			for _, c := range msg {
				h.exec(c)
			}
			continue
		case tea.QuitMsg:
			h.quit = true
			continue
		}
		_, cmd := h.m.Update(msg)
		h.exec(cmd)
	}
}

// exec runs cmd until it returns or the fake parks it, then queues what it
// posted to the inbox and its result, in that order.
func (h *harness) exec(cmd tea.Cmd) {
	h.t.Helper()
	if cmd == nil {
		return
	}
	done := make(chan tea.Msg, 1)
	go func() { done <- cmd() }()
	select {
	case msg := <-done:
		h.drainInbox()
		h.queue = append(h.queue, msg)
	case method := <-h.fake.parked:
		h.parked[method] = done
		h.drainInbox()
	case <-time.After(10 * time.Second):
		h.t.Fatal("a command neither finished nor parked")
	}
}

func (h *harness) drainInbox() {
	for {
		select {
		case msg := <-h.inbox:
			h.queue = append(h.queue, msg)
		default:
			return
		}
	}
}

// release lets a held method finish and processes the outcome.
func (h *harness) release(method string) {
	h.t.Helper()
	done, ok := h.parked[method]
	if !ok {
		h.t.Fatalf("%s is not parked", method)
	}
	delete(h.parked, method)
	h.fake.release(method)
	h.queue = append(h.queue, <-done)
	h.drainInbox()
	h.pump()
}

// event pushes a watch event through the live stream.
func (h *harness) event(ev api.Event) {
	h.t.Helper()
	if _, ok := h.parked[api.MethodEventsWatch]; !ok {
		h.t.Fatal("no live watch")
	}
	h.fake.push <- ev
	<-h.fake.pushed
	h.drainInbox()
	h.pump()
}

// endWatch breaks the live stream with err.
func (h *harness) endWatch(err error) {
	h.t.Helper()
	done := h.parked[api.MethodEventsWatch]
	delete(h.parked, api.MethodEventsWatch)
	h.fake.end <- err
	h.queue = append(h.queue, <-done)
	h.drainInbox()
	h.pump()
}

// fire delivers the first pending timer whose message matches.
func (h *harness) fire(match func(tea.Msg) bool) bool {
	for i, msg := range h.timers {
		if match(msg) {
			h.timers = append(h.timers[:i], h.timers[i+1:]...)
			h.send(msg)
			return true
		}
	}
	return false
}

// keys types each key: single characters, or names such as "enter", "tab".
func (h *harness) keys(keys ...string) {
	for _, k := range keys {
		h.send(keyMsg(k))
	}
}

// typeText types s character by character.
func (h *harness) typeText(s string) {
	for _, r := range s {
		h.send(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

func keyMsg(k string) tea.KeyPressMsg {
	named := map[string]tea.Key{
		"enter":     {Code: tea.KeyEnter},
		"esc":       {Code: tea.KeyEscape},
		"tab":       {Code: tea.KeyTab},
		"shift+tab": {Code: tea.KeyTab, Mod: tea.ModShift},
		"up":        {Code: tea.KeyUp},
		"down":      {Code: tea.KeyDown},
		"left":      {Code: tea.KeyLeft},
		"right":     {Code: tea.KeyRight},
		"backspace": {Code: tea.KeyBackspace},
		"end":       {Code: tea.KeyEnd},
		"ctrl+c":    {Code: 'c', Mod: tea.ModCtrl},
		"space":     {Code: tea.KeySpace, Text: " "},
	}
	if key, ok := named[k]; ok {
		return tea.KeyPressMsg(key)
	}
	r := []rune(k)
	if len(r) != 1 {
		panic("unknown key " + k)
	}
	return tea.KeyPressMsg{Code: r[0], Text: k}
}

// screen is the rendered frame without escape sequences and with trailing
// blanks trimmed, after checking that it fills the terminal exactly.
func (h *harness) screen() string {
	h.t.Helper()
	content := h.m.View().Content
	lines := strings.Split(content, "\n")
	if len(lines) != h.m.height {
		h.t.Errorf("frame has %d lines, terminal has %d", len(lines), h.m.height)
	}
	for i, l := range lines {
		if w := ansi.StringWidth(l); w > h.m.width {
			h.t.Errorf("line %d is %d columns wide, terminal has %d: %q", i, w, h.m.width, ansi.Strip(l))
		}
		lines[i] = strings.TrimRight(ansi.Strip(l), " ")
	}
	return strings.Join(lines, "\n") + "\n"
}

// golden compares the screen with testdata/name.golden (-update rewrites it).
func (h *harness) golden(name string) {
	h.t.Helper()
	got := h.screen()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		h.t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got ---\n%s--- want ---\n%s", name, path, got, want)
	}
}

// contains fails unless the screen shows all of want.
func (h *harness) contains(want ...string) {
	h.t.Helper()
	s := h.screen()
	for _, w := range want {
		if !strings.Contains(s, w) {
			h.t.Errorf("screen lacks %q:\n%s", w, s)
		}
	}
}
