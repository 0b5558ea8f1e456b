package api

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

type echoReq struct {
	Text  string `json:"text"`
	Steps int    `json:"steps"`
}

type echoResp struct {
	Text string `json:"text"`
}

func serve(t *testing.T) *Client {
	t.Helper()
	return serveWith(t, func(srv *Server) {
		Handle(srv, "test.echo", func(ctx context.Context, req echoReq, p Progress) (echoResp, error) {
			for i := range req.Steps {
				p(Event{Stage: "step", Message: fmt.Sprintf("step %d", i+1), Done: int64(i + 1), Total: int64(req.Steps)})
			}
			return echoResp{Text: req.Text}, nil
		})
		Handle(srv, "test.fail", func(ctx context.Context, req echoReq, p Progress) (echoResp, error) {
			p(Event{Stage: "before", Message: "about to fail"})
			inner := Errorf(CodeNotFound, "no VM named %q", req.Text).WithHint("list VMs with `banger vm list`")
			return echoResp{}, fmt.Errorf("create vm: %w", inner)
		})
		Handle(srv, "test.plain", func(ctx context.Context, req struct{}, p Progress) (echoResp, error) {
			return echoResp{}, errors.New("disk on fire")
		})
	})
}

func TestCallPlainAndStreaming(t *testing.T) {
	c := serve(t)
	var out echoResp
	if err := c.Call(context.Background(), "test.echo", echoReq{Text: "hi", Steps: 3}, &out, nil); err != nil || out.Text != "hi" {
		t.Fatalf("plain call: %v %+v", err, out)
	}
	var events []Event
	out = echoResp{}
	if err := c.Call(context.Background(), "test.echo", echoReq{Text: "yo", Steps: 3}, &out, func(e Event) { events = append(events, e) }); err != nil {
		t.Fatal(err)
	}
	if out.Text != "yo" || len(events) != 3 || events[2].Message != "step 3" || events[2].Total != 3 || events[0].Time.IsZero() {
		t.Fatalf("streaming: %+v %+v", out, events)
	}
}

func TestErrorsKeepCodeContextAndHint(t *testing.T) {
	c := serve(t)
	for _, stream := range []bool{false, true} {
		var onEvent func(Event)
		var got []Event
		if stream {
			onEvent = func(e Event) { got = append(got, e) }
		}
		err := c.Call(context.Background(), "test.fail", echoReq{Text: "dev"}, nil, onEvent)
		var ae *Error
		if !errors.As(err, &ae) {
			t.Fatalf("stream=%v: not an *Error: %v", stream, err)
		}
		if ae.Code != CodeNotFound || ae.Message != `create vm: no VM named "dev"` || ae.Hint == "" {
			t.Fatalf("stream=%v: %+v", stream, ae)
		}
		if stream && len(got) != 1 {
			t.Fatalf("events before the error were lost: %+v", got)
		}
	}
	err := c.Call(context.Background(), "test.plain", nil, nil, nil)
	if CodeOf(err) != CodeInternal || err.Error() != "disk on fire" {
		t.Fatalf("uncoded error: %v (%s)", err, CodeOf(err))
	}
}

func TestUnreachableDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "nobody.sock"))
	_, err := c.DaemonInfo(context.Background())
	if !errors.Is(err, ErrDaemonUnreachable) {
		t.Fatalf("got %v, want ErrDaemonUnreachable", err)
	}
}
