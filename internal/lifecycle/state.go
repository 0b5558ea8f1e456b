// Package lifecycle runs the life of a VM: create, start, stop, restart,
// delete, and reconcile after a daemon restart. It owns the one VM state
// machine and the one VM name rule. Everything with an outside effect (the
// database, disks, network, the VMM driver, the guest agent, the clock) is
// a port declared in ports.go; the daemon adapts its pieces to them, and the
// tests use fakes.
package lifecycle

import (
	"fmt"
	"regexp"
	"slices"
	"time"
)

// State is a VM's lifecycle state as last recorded.
type State string

// The lifecycle states. The store keeps them as these strings; the API
// maps them to its wire enum.
const (
	Creating State = "creating" // recorded, disk not ready: reconcile undoes it
	Starting State = "starting" // booting: reconcile stops its VMM, if any
	Running  State = "running"
	Paused   State = "paused" // the VMM is there, its vCPUs stopped
	Stopping State = "stopping"
	Stopped  State = "stopped"
	Failed   State = "failed"
	Deleting State = "deleting" // files going: reconcile finishes the delete
)

// transitions lists, for each state, the states a VM may go to from it.
// Writing the same state again (recording a pid while starting) is an
// update, not a transition, and is always allowed.
var transitions = map[State][]State{
	Creating: {Starting, Stopped, Deleting},
	// Stopped: a VM recorded starting with no VMM (stop finds nothing to stop).
	// Creating: a new VM whose restore from a snapshot failed (bootMode.failTo).
	Starting: {Running, Failed, Stopped, Creating, Deleting},
	// Stopped and Failed: the VMM exited by itself or was not there.
	Running: {Paused, Stopping, Stopped, Failed, Deleting},
	// Running: resumed. The others as for Running: a paused VMM can be
	// stopped, can die, and its VM deleted.
	Paused: {Running, Stopping, Stopped, Failed, Deleting},
	// Running or Paused: a stop whose VMM survived (it is as it was), or a
	// VMM adopted after a restart.
	Stopping: {Running, Paused, Stopped, Failed, Deleting},
	Stopped:  {Starting, Deleting},
	Failed:   {Starting, Deleting},
	// Deleting again: a delete that failed half-way is retried.
	Deleting: {Deleting},
}

// States lists every state, in lifecycle order.
func States() []State {
	return []State{Creating, Starting, Running, Paused, Stopping, Stopped, Failed, Deleting}
}

// Valid reports whether s is one of the lifecycle states.
func (s State) Valid() bool { return slices.Contains(States(), s) }

// CanBecome reports whether a VM in state s may be recorded in state to.
func (s State) CanBecome(to State) bool {
	return s == to || slices.Contains(transitions[s], to)
}

// hasVMM reports whether a VM in state s is supposed to have a VMM process.
func (s State) hasVMM() bool {
	return s == Running || s == Paused || s == Starting || s == Stopping
}

// VM is one virtual machine as the lifecycle sees it: what the user asked
// for and what was last observed. Operations carry it from step to step and
// write it once per transition.
type VM struct {
	ID, Name           string
	ImageID, ImageName string
	VCPUs, MemoryMiB   int
	DiskSizeBytes      int64
	Autostart          bool
	CreatedAt          time.Time
	// Network holds the VM's network settings, opaque here: the network
	// port reads them.
	Network []byte
	// Labels are the user's key=value tags (the MCP server records the
	// agent that made a VM as "creator"); see ValidateLabels.
	Labels map[string]string

	State      State
	VMM        string // driver name
	PID        int    // VMM process; 0 when none
	PIDStart   uint64 // its start time (/proc/PID/stat field 22); 0 when unknown
	APISocket  string
	RunDir     string
	StartedAt  time.Time // zero: never started
	StoppedAt  time.Time
	LastError  string
	ExitStatus string
}

// clearProcess forgets the VMM process: the VM has none now.
func (vm *VM) clearProcess() { vm.PID, vm.PIDStart, vm.APISocket = 0, 0, "" }

// Image is what a VM boots from.
type Image struct {
	ID, Name        string
	Kernel, Initrd  string
	Rootfs          string
	RootfsSizeBytes int64
	// BootArgs are kernel parameters the image needs (an image made from
	// a container image boots banger's init: "init=/.banger/init").
	BootArgs string
}

var (
	namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	idPattern   = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// ValidName reports whether name follows the name rule (see ValidateName).
// Image names follow it too.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ValidateName is the one rule for VM names: a DNS label (every VM gets
// <name>.<domain>) that does not look like a VM ID (lookups take either).
func ValidateName(name string) error { return validateName("VM", name) }

// ValidateSnapshotName is ValidateName's rule for snapshot names (lookups
// take a name or an ID there too).
func ValidateSnapshotName(name string) error { return validateName("snapshot", name) }

// validateName applies the name rule to the name of a thing of kind.
func validateName(kind, name string) error {
	if !ValidName(name) {
		return Errorf(Invalid, "invalid %s name %q: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit", kind, name)
	}
	if idPattern.MatchString(name) {
		return Errorf(Invalid, "invalid %s name %q: 16 hex digits look like a %s ID; pick another name", kind, name, kind)
	}
	return nil
}

// ErrorKind classifies an Error for the API edge.
type ErrorKind int

// The kinds of Error.
const (
	Invalid      ErrorKind = iota + 1 // the request is wrong
	NotFound                          // no such VM or image
	Exists                            // the name is taken
	Precondition                      // the VM or host is not in a state that allows it
	Unavailable                       // the host lacks what it takes (no VMM)
)

// Error is a refusal a user can act on: one sentence, and a hint.
type Error struct {
	Kind    ErrorKind
	Message string
	Hint    string
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error.
func Errorf(kind ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// WithHint returns a copy of e carrying hint.
func (e *Error) WithHint(hint string) *Error {
	c := *e
	c.Hint = hint
	return &c
}
