package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
)

// Defaults for a copy out of a VM: generous for real work, but a guest that
// sends without end is stopped before it fills the disk or hangs the CLI.
const (
	defaultCopyMaxBytes = "32G"
	defaultCopyMaxFiles = 1_000_000
	defaultCopyMinFree  = "256M"
	defaultCopyIdle     = time.Minute
)

// copyLimits bound what `vm cp VM:PATH LOCAL` accepts from the guest.
type copyLimits struct {
	MaxBytes string
	MaxFiles int
	MinFree  string
	Idle     time.Duration
}

func (l *copyLimits) flags(f *pflag.FlagSet) {
	f.StringVar(&l.MaxBytes, "max-bytes", defaultCopyMaxBytes, "out of a VM: stop a copy of more file data than this (0: no limit)")
	f.IntVar(&l.MaxFiles, "max-files", defaultCopyMaxFiles, "out of a VM: stop a copy of more files, directories and symlinks than this (0: no limit)")
	f.StringVar(&l.MinFree, "min-free", defaultCopyMinFree, "out of a VM: stop a copy that would leave less free space than this")
	f.DurationVar(&l.Idle, "idle-timeout", defaultCopyIdle, "out of a VM: stop a copy when the VM sends nothing for this long (0: wait forever)")
}

// copyReceiver is how a copy out of a VM is written: as cp -r writes one
// (modes less the umask, no special bits unless asked, existing directories
// untouched: agent.TreeReceiver's untrusted default), owned by the caller
// unless root asked to keep the guest's numeric owners, within the limits.
func copyReceiver(o cpOptions, euid int, progress func(int)) (agent.TreeReceiver, error) {
	if o.SpecialBits && euid == 0 {
		return agent.TreeReceiver{}, errors.New("--special-bits is refused as root: the guest could plant a setuid-root program; copy as your own user instead")
	}
	maxBytes, err := config.ParseSize(o.Limits.MaxBytes)
	if err != nil {
		return agent.TreeReceiver{}, fmt.Errorf("--max-bytes: %w", err)
	}
	minFree, err := config.ParseSize(o.Limits.MinFree)
	if err != nil {
		return agent.TreeReceiver{}, fmt.Errorf("--min-free: %w", err)
	}
	if o.Limits.MaxFiles < 0 || o.Limits.Idle < 0 {
		return agent.TreeReceiver{}, errors.New("--max-files and --idle-timeout cannot be negative; use 0 for no limit")
	}
	tr := agent.TreeReceiver{
		Umask:        o.Umask,
		KeepSpecial:  o.SpecialBits,
		MaxBytes:     int64(maxBytes),
		MaxEntries:   o.Limits.MaxFiles,
		CheckSpace:   true,
		SpaceReserve: int64(minFree),
		IdleTimeout:  o.Limits.Idle,
		Progress:     progress,
	}
	if o.PreserveOwner && euid == 0 {
		tr.Owner = func(e agent.Entry) (int, int) { return e.UID, e.GID }
	}
	return tr, nil
}

// explainCopyError says which flag changes the limit that stopped a copy.
func explainCopyError(err error) error {
	var limit *agent.LimitError
	switch {
	case errors.As(err, &limit):
		flag := map[string]string{agent.LimitBytes: "--max-bytes", agent.LimitEntries: "--max-files", agent.LimitSpace: "--min-free"}[limit.Limit]
		return fmt.Errorf("copy stopped: %w (%s changes the limit)", err, flag)
	case errors.Is(err, agent.ErrCopyStalled):
		return fmt.Errorf("copy stopped: %w (--idle-timeout gives a slow VM longer)", err)
	}
	return err
}
