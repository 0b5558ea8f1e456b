package tui

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
)

func TestRunQuitsOnQ(t *testing.T) {
	var out bytes.Buffer
	err := runWithTimeout(t, Options{Client: fixture(), Input: strings.NewReader("q"), Output: &out})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A bug anywhere in the program must come back as an error with the
// terminal restored, not kill the process with the terminal in raw mode.
func TestRunSurvivesPanic(t *testing.T) {
	f := fixture()
	f.watchPanic = true
	in, w := io.Pipe()
	t.Cleanup(func() { _ = w.Close() })
	err := runWithTimeout(t, Options{Client: f, Input: in, Output: io.Discard})
	if !errors.Is(err, tea.ErrProgramPanic) {
		t.Fatalf("Run returned %v, want a wrapped ErrProgramPanic", err)
	}
}

func runWithTimeout(t *testing.T, opts Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatal("Run did not return")
		return nil
	}
}
