package vmmproc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// ErrSocketInUse means a live process answers on a socket path a VMM was
// about to bind: most likely another VMM for the same VM.
var ErrSocketInUse = errors.New("socket is in use by a live process")

// ReclaimSocket makes path free for bind: absent is fine; a socket nobody
// accepts on (left by a crashed VMM) is removed; a socket someone answers on
// is ErrSocketInUse; any other file is refused rather than deleted.
func ReclaimSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe stale socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// Owner is a uid/gid that a VM's run dir, sockets and log files are handed
// to, so an unprivileged owner can use a VM whose VMM was started by root.
type Owner struct {
	UID, GID int
}

// HandOver gives a VM's files to its Owner; with no Owner it does nothing.
type HandOver struct {
	Owner *Owner
	// Chown is os.Lchown; tests replace it to observe the hand-over
	// without root.
	Chown func(path string, uid, gid int) error
}

// File gives path to the owner.
func (h HandOver) File(path string) error {
	o := h.Owner
	if o == nil {
		return nil
	}
	if err := h.Chown(path, o.UID, o.GID); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", path, o.UID, o.GID, err)
	}
	return nil
}

// Prepare readies the host side of spec for the VMM name ("qemu"): the run
// dir and the log files, created and handed over (created here so they
// belong to the owner before the VMM writes a line), and the sockets it
// will bind freed: a stale one is removed, a live one refused
// (ErrSocketInUse), since another VMM of this VM is still running.
func (h HandOver) Prepare(name string, spec vmm.LaunchSpec, sockets ...string) error {
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	if err := h.File(spec.RunDir); err != nil {
		return err
	}
	for _, s := range sockets {
		if s == "" {
			continue
		}
		if err := ReclaimSocket(s); err != nil {
			if errors.Is(err, ErrSocketInUse) {
				return fmt.Errorf("another %s is using %s: %w", name, s, ErrSocketInUse)
			}
			return fmt.Errorf("reclaim socket: %w", err)
		}
	}
	for _, p := range []string{spec.SerialLogPath, spec.VMMLogPath} {
		if p == "" {
			continue
		}
		if err := CreateLog(p); err != nil {
			return err
		}
		if err := h.File(p); err != nil {
			return err
		}
	}
	return nil
}

// CreateLog creates a log file a VMM (or a jail launcher) appends to.
func CreateLog(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	return f.Close()
}

// ValidateSpec checks what every driver needs of a launch spec; a driver
// adds its own rule for the VM id.
func ValidateSpec(spec vmm.LaunchSpec) error {
	var missing []string
	for _, f := range [][2]string{
		{"vm_id", spec.VMID}, {"run_dir", spec.RunDir}, {"kernel_path", spec.KernelPath},
		{"root_drive.path", spec.RootDrive.Path}, {"serial_log_path", spec.SerialLogPath},
	} {
		if f[1] == "" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("launch spec is missing %s", strings.Join(missing, ", "))
	}
	if spec.VCPUs < 1 || spec.MemoryMiB < 1 {
		return fmt.Errorf("launch spec needs vcpus and memory_mib of at least 1 (got %d, %d)", spec.VCPUs, spec.MemoryMiB)
	}
	return nil
}

// LogTail returns the end of a log file, where a VMM's own start-up errors
// land, formatted for appending to an error ("" when there is nothing).
func LogTail(path string) string {
	const tailBytes = 512
	b, err := ReadTail(path, tailBytes)
	if err != nil {
		return ""
	}
	tail := strings.TrimSpace(string(b))
	if tail == "" {
		return ""
	}
	return fmt.Sprintf("; end of %s: %q", filepath.Base(path), tail)
}

// ReadTail returns the last n bytes of the file at path (fewer if it is
// shorter). A console log may be trimmed (CapLog) between the size check
// and the read, which then comes back short: the read is retried then, so
// the newest output is not lost to the race.
func ReadTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for range 3 {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		off := max(0, st.Size()-n)
		buf := make([]byte, st.Size()-off)
		k, err := f.ReadAt(buf, off)
		if k == len(buf) {
			return buf, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("read the end of %s: it keeps shrinking", path)
}
