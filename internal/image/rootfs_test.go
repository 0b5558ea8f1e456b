package image

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// TestDebootstrapStreamsPhases: debootstrap's phase lines reach progress
// while it runs, its per-package chatter does not, and the step is bounded.
func TestDebootstrapStreamsPhases(t *testing.T) {
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if c.Stream == nil || c.Timeout <= 0 {
			return system.Output{}, fmt.Errorf("debootstrap run without a stream or a timeout: %+v", c)
		}
		// Written in pieces that split lines, as a pipe delivers them.
		for _, chunk := range []string{"I: Retrieving InRel", "ease \nI: Retrieving libc6 2.36\n",
			"I: Resolving dependencies of required packages...\nW: a warning\n", "I: Configuring libc6...\nI: Base system installed successfully.\n"} {
			if _, err := c.Stream.Write([]byte(chunk)); err != nil {
				return system.Output{}, err
			}
		}
		return system.Output{}, nil
	}}
	var got []string
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("x"))
	spec := RootfsSpec{Dir: filepath.Join(t.TempDir(), "rootfs"), Mirror: "http://deb.debian.org/debian", Suite: "bookworm", User: "root", AgentBinary: agent}
	err := Debootstrap(context.Background(), r, spec, func(stage, msg string) { got = append(got, stage+": "+msg) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rootfs: I: Resolving dependencies of required packages...", "rootfs: I: Base system installed successfully."}
	if !slices.Equal(got, want) {
		t.Fatalf("progress %q, want %q", got, want)
	}
}

func TestLineWriterCutsLongLines(t *testing.T) {
	var lines []string
	w := &lineWriter{line: func(l string) { lines = append(lines, l) }}
	if _, err := w.Write([]byte(strings.Repeat("x", maxStreamLine+10) + "\nshort\npartial")); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || len(lines[0]) != maxStreamLine || lines[1] != strings.Repeat("x", 10) || lines[2] != "short" {
		t.Fatalf("lines %d: %.20q...", len(lines), lines)
	}
}
