package daemon

import (
	"context"
	"sync"

	"github.com/banger-dev/banger/internal/api"
)

// hub fans change events out to events.watch subscribers. A subscriber that
// falls behind is dropped (its stream ends) rather than slowing the daemon;
// clients reconnect and refresh, which is cheaper than unbounded buffers.
type hub struct {
	mu   sync.Mutex
	subs map[chan api.Event]struct{}
}

const subscriberBuffer = 256

func newHub() *hub { return &hub{subs: map[chan api.Event]struct{}{}} }

func (h *hub) subscribe() (<-chan api.Event, func()) {
	ch := make(chan api.Event, subscriberBuffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

func (h *hub) publish(ev api.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// watch serves events.watch: a hello event, then every change until the
// client goes away or the daemon stops.
func (d *Daemon) watch(ctx context.Context, _ struct{}, p api.Progress) (struct{}, error) {
	ch, cancel := d.events.subscribe()
	defer cancel()
	p(api.Event{Kind: "watch.started", Stage: "watch", Message: "watching"})
	for {
		select {
		case <-ctx.Done():
			return struct{}{}, nil
		case <-d.stop:
			return struct{}{}, nil
		case ev, ok := <-ch:
			if !ok {
				return struct{}{}, api.Errorf(api.CodeUnavailable, "event stream dropped: the client fell behind; reconnect")
			}
			p(ev)
		}
	}
}
