package updater

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/banger-dev/banger/internal/system"
)

// InstallTargets are the installed binaries' paths.
type InstallTargets struct {
	Banger     string `json:"banger"`
	Bangerd    string `json:"bangerd"`
	VsockAgent string `json:"vsock_agent"`
}

// DefaultInstallTargets are the canonical install paths under root ("" or
// "/" for the real system).
func DefaultInstallTargets(root string) InstallTargets {
	r := rootOr(root)
	return InstallTargets{
		Banger:     filepath.Join(r, "usr", "local", "bin", BangerBinary),
		Bangerd:    filepath.Join(r, "usr", "local", "bin", BangerdBinary),
		VsockAgent: filepath.Join(r, "usr", "local", "lib", "banger", VsockAgentBinary),
	}
}

// SwapResult records the replacements Swap made, in the order made.
type SwapResult struct {
	Replaced []system.Replacement `json:"replaced"`
}

// swapOrder pairs staged files with targets in the order they are
// replaced: the guest agent first (nothing on the host runs it), then the
// daemon (systemd restarts it later), and the CLI last, so the command
// doing the update keeps being the old banger until everything else is in
// place.
func swapOrder(s StagedRelease, t InstallTargets) [][2]string {
	return [][2]string{
		{s.VsockAgent, t.VsockAgent},
		{s.Bangerd, t.Bangerd},
		{s.Banger, t.Banger},
	}
}

// Swap replaces each target with its staged binary via
// system.AtomicReplace, keeping .previous backups. It stops at the first
// failure and returns what it had replaced so far together with the error;
// the caller then calls Rollback with that result.
func Swap(s StagedRelease, t InstallTargets) (SwapResult, error) {
	var res SwapResult
	for _, p := range swapOrder(s, t) {
		r, err := system.AtomicReplace(p[1], p[0], 0o755)
		if err != nil {
			return res, fmt.Errorf("install new binaries (%d of 3 replaced): %w", len(res.Replaced), err)
		}
		res.Replaced = append(res.Replaced, r)
	}
	return res, nil
}

// Rollback undoes res in reverse order, restoring each .previous backup
// (or removing a target that did not exist before). It tries every target
// even after a failure and joins the errors, each naming the file and the
// command that fixes it by hand, so a half-rolled-back install tells an
// operator exactly what is left to do.
func Rollback(res SwapResult) error {
	var errs []error
	for i := len(res.Replaced) - 1; i >= 0; i-- {
		if err := system.RestoreBackup(res.Replaced[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("roll back: %w", errors.Join(errs...))
	}
	return nil
}

// CleanupBackups removes the .previous files res made. Call it only once
// the new install has proved itself (banger doctor passed): after this,
// Rollback is no longer possible.
func CleanupBackups(res SwapResult) error {
	var errs []error
	for _, r := range res.Replaced {
		if err := system.RemoveBackup(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
