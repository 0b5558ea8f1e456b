package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
)

// TestForkFailureNamesTheForksMade: with --count N some forks may be made
// before one fails; the answer is the error alone, so it must name the VMs
// that exist (they run and use resources) and keep the error's code.
func TestForkFailureNamesTheForksMade(t *testing.T) {
	cause := lifecycle.Errorf(lifecycle.Precondition, "fork try-2 failed: restore refused").WithHint("see the log")
	err := apiError(forkFailure(cause, []lifecycle.VM{{Name: "try-1"}, {Name: "try-3"}}))
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %T %v, want an *api.Error", err, err)
	}
	if e.Code != api.CodeFailedPrecondition || e.Hint != "see the log" {
		t.Errorf("code %q hint %q: the cause's code and hint are lost", e.Code, e.Hint)
	}
	if !strings.Contains(e.Message, "restore refused") || !strings.Contains(e.Message, "made and running: try-1, try-3") {
		t.Errorf("message %q does not name the cause and the forks made", e.Message)
	}
	if got := forkFailure(cause, nil); got != error(cause) {
		t.Errorf("with nothing made the error must be the cause, got %v", got)
	}
}
