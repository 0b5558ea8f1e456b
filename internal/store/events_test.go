package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestEvents(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()

	vm := testVM("dev")
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 5 {
		e := Event{Kind: "vm.step", Message: fmt.Sprintf("step %d", i)}
		if i%2 == 0 {
			e.VMID, e.VMName = vm.ID, vm.Name
		}
		if i == 0 {
			e.Data = json.RawMessage(`{"n":0}`)
		}
		got, err := s.AppendEvent(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID == 0 || got.At.IsZero() {
			t.Errorf("AppendEvent = %+v, want ID and At set", got)
		}
		ids = append(ids, got.ID)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("event IDs %v not increasing", ids)
	}

	all, err := s.ListEvents(ctx, EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(all); !slices.Equal(got, ids) {
		t.Errorf("all events = %v, want %v", got, ids)
	}
	if string(all[0].Data) != `{"n":0}` || string(all[1].Data) != "{}" || all[0].VMName != "dev" {
		t.Errorf("first events = %+v, %+v", all[0], all[1])
	}

	tests := []struct {
		name string
		q    EventQuery
		want []int64
	}{
		{"one vm", EventQuery{VMID: vm.ID}, []int64{ids[0], ids[2], ids[4]}},
		{"follow", EventQuery{AfterID: ids[1]}, ids[2:]},
		{"follow with limit", EventQuery{AfterID: ids[1], Limit: 2}, ids[2:4]},
		{"tail", EventQuery{Limit: 2}, ids[3:]},
		{"tail of one vm", EventQuery{VMID: vm.ID, Limit: 2}, []int64{ids[2], ids[4]}},
	}
	for _, tt := range tests {
		got, err := s.ListEvents(ctx, tt.q)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(eventIDs(got), tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, eventIDs(got), tt.want)
		}
	}

	// Events outlive their VM.
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListEvents(ctx, EventQuery{VMID: vm.ID}); len(got) != 3 {
		t.Errorf("after deleting the vm, %d of its events remain, want 3", len(got))
	}

	// Pruning removes what is older than the cutoff; the clock ticks one
	// second per call, so the cutoff falls between events 2 and 3.
	cutoff := all[2].At.Add(time.Millisecond)
	n, err := s.PruneEvents(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("PruneEvents removed %d, want 3", n)
	}
	left, _ := s.ListEvents(ctx, EventQuery{})
	if !slices.Equal(eventIDs(left), ids[3:]) {
		t.Errorf("after prune: %v, want %v", eventIDs(left), ids[3:])
	}
}

func TestAppendEventValidates(t *testing.T) {
	s, _ := openTestStore(t)
	if _, err := s.AppendEvent(context.Background(), Event{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no kind: %v, want ErrInvalid", err)
	}
	if _, err := s.AppendEvent(context.Background(), Event{Kind: "x", Data: json.RawMessage("{")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad data: %v, want ErrInvalid", err)
	}
}

func eventIDs(es []Event) []int64 {
	var out []int64
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}
