package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/agent"
)

// cpFlags parses args as `vm cp` flags and returns the options they give.
func cpFlags(t *testing.T, args ...string) cpOptions {
	t.Helper()
	var o cpOptions
	cmd := &cobra.Command{}
	cmd.Flags().BoolVarP(&o.PreserveOwner, "preserve-owner", "p", false, "")
	cmd.Flags().BoolVar(&o.SpecialBits, "special-bits", false, "")
	o.Limits.flags(cmd.Flags())
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	o.Umask = 0o077
	return o
}

// TestHostileGuestCpDefaults: out of a VM, a copy is bounded and untrusted
// by default: every limit set, the umask applied, no special bits, owners
// kept only for root with -p.
func TestHostileGuestCpDefaults(t *testing.T) {
	tr, err := copyReceiver(cpFlags(t, "-p"), 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.MaxBytes <= 0 || tr.MaxEntries <= 0 || tr.IdleTimeout <= 0 || !tr.CheckSpace || tr.SpaceReserve <= 0 {
		t.Errorf("default receiver %+v lacks a limit", tr)
	}
	if tr.Trusted || tr.KeepSpecial || tr.Umask != 0o077 || tr.Owner != nil {
		t.Errorf("default receiver as a user: trusted=%v keepSpecial=%v umask=%o owner set=%v", tr.Trusted, tr.KeepSpecial, tr.Umask, tr.Owner != nil)
	}
	root, err := copyReceiver(cpFlags(t, "-p"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if root.Owner == nil {
		t.Error("root with -p does not keep the guest's owners")
	}
}

func TestHostileGuestCpFlags(t *testing.T) {
	tr, err := copyReceiver(cpFlags(t, "--max-bytes", "1G", "--max-files", "7", "--min-free", "0", "--idle-timeout", "0", "--special-bits"), 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.MaxBytes != 1<<30 || tr.MaxEntries != 7 || tr.SpaceReserve != 0 || tr.IdleTimeout != 0 || !tr.KeepSpecial {
		t.Errorf("receiver %+v does not follow the flags", tr)
	}
	for _, tt := range []struct {
		args []string
		euid int
		want string
	}{
		{[]string{"--special-bits"}, 0, "--special-bits is refused as root"},
		{[]string{"--max-bytes", "lots"}, 1000, "--max-bytes: invalid size"},
		{[]string{"--max-files", "-1"}, 1000, "cannot be negative"},
	} {
		if _, err := copyReceiver(cpFlags(t, tt.args...), tt.euid, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v as %d: err = %v, want %q", tt.args, tt.euid, err, tt.want)
		}
	}
}

func TestHostileGuestCpExplains(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&agent.LimitError{Limit: agent.LimitEntries, Msg: "too many"}, "--max-files changes the limit"},
		{&agent.LimitError{Limit: agent.LimitSpace, Msg: "not enough space"}, "--min-free changes the limit"},
		{&agent.LimitError{Limit: agent.LimitBytes, Msg: "big"}, "--max-bytes changes the limit"},
		{agent.ErrCopyStalled, "--idle-timeout"},
	} {
		got := explainCopyError(tt.err)
		if !errors.Is(got, tt.err) || !strings.Contains(got.Error(), tt.want) {
			t.Errorf("explainCopyError(%v) = %v, want it to mention %q", tt.err, got, tt.want)
		}
	}
}
