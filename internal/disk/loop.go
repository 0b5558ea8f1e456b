package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every loop device, device-mapper device and
// COW file banger makes, so orphan cleanup can find its own and nothing else.
const NamePrefix = "banger-"

// namePattern is what banger accepts as a loop or dm name: the prefix, then
// lowercase letters, digits and dashes. It keeps names safe as dmsetup
// arguments and short enough for lo_file_name (64 bytes with the NUL).
var namePattern = regexp.MustCompile(`^banger-[a-z0-9][a-z0-9-]{0,55}$`)

// ValidName reports whether name is a well-formed banger device name.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("device name %q is not a banger name (banger- followed by up to 56 lowercase letters, digits or dashes)", name)
	}
	return nil
}

// OwnerID returns the ID embedded in a banger device or file name:
// "banger-<id>", "banger-<id>-base" and "banger-<id>-cow" all give <id>.
func OwnerID(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok || rest == "" {
		return "", false
	}
	id, _, _ := strings.Cut(rest, "-")
	return id, id != ""
}

// Loop is one attached loop device.
type Loop struct {
	// Device is the block device path, e.g. /dev/loop3.
	Device string
	// Backing is the file behind it, as the kernel reports it.
	Backing string
	// Name is the lo_file_name banger stored (NamePrefix…); other tools
	// usually store the backing path here.
	Name     string
	ReadOnly bool
}

// LoopOptions configures an attach.
type LoopOptions struct {
	// Name is stored as the device's lo_file_name; it must pass ValidName.
	Name     string
	ReadOnly bool
}

// Loops attaches and detaches loop devices with ioctls (no losetup). Dev and
// Sys are the roots of /dev and /sys, injectable for tests of listing.
type Loops struct {
	Dev string
	Sys string
}

// HostLoops is the real /dev and /sys.
func HostLoops() Loops { return Loops{Dev: "/dev", Sys: "/sys"} }

// Available reports whether loop devices can be made here.
func (l Loops) Available() error {
	if _, err := os.Stat(filepath.Join(l.Dev, "loop-control")); err != nil {
		return fmt.Errorf("loop devices are unavailable: %s is missing (load the loop module)", filepath.Join(l.Dev, "loop-control"))
	}
	return nil
}

// Attach binds backing to a free loop device. It needs root (CAP_SYS_ADMIN).
func (l Loops) Attach(backing string, o LoopOptions) (Loop, error) {
	if err := ValidName(o.Name); err != nil {
		return Loop{}, err
	}
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	file, err := os.OpenFile(backing, flag, 0)
	if err != nil {
		return Loop{}, fmt.Errorf("open loop backing file: %w", err)
	}
	defer file.Close()
	lp, err := l.AttachFile(file, o)
	if err != nil {
		return Loop{}, err
	}
	lp.Backing, _ = filepath.Abs(backing)
	return lp, nil
}

// AttachFile binds a free loop device to an already-open file. The root
// helper uses it with the descriptor the daemon passed: it never reopens
// the owner's file by path, which a hardened helper without
// CAP_DAC_OVERRIDE could not do, and which would race a path swap anyway.
// The file must be open read-write unless o.ReadOnly.
func (l Loops) AttachFile(file *os.File, o LoopOptions) (Loop, error) {
	if err := ValidName(o.Name); err != nil {
		return Loop{}, err
	}
	ctl, err := os.OpenFile(filepath.Join(l.Dev, "loop-control"), os.O_RDWR, 0)
	if err != nil {
		return Loop{}, fmt.Errorf("open loop control: %w", err)
	}
	defer ctl.Close()

	info := unix.LoopInfo64{}
	copy(info.File_name[:len(info.File_name)-1], o.Name)
	if o.ReadOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	// LOOP_CTL_GET_FREE only names a free device; another process may take
	// it before we bind it, which shows as EBUSY, so try a few times.
	var lastErr error
	for range 8 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return Loop{}, fmt.Errorf("find a free loop device: %w", err)
		}
		dev := filepath.Join(l.Dev, "loop"+strconv.Itoa(n))
		lastErr = bindLoop(dev, n, file, &info)
		if lastErr == nil {
			return Loop{Device: dev, Backing: file.Name(), Name: o.Name, ReadOnly: o.ReadOnly}, nil
		}
		if !errors.Is(lastErr, unix.EBUSY) {
			break
		}
	}
	return Loop{}, fmt.Errorf("attach %s to a loop device: %w", file.Name(), lastErr)
}

func bindLoop(dev string, n int, backing *os.File, info *unix.LoopInfo64) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		// Without devtmpfs (some containers) new loop nodes do not appear
		// by themselves.
		if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create %s: %w", dev, err)
		}
		f, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: *info}
	err = unix.IoctlLoopConfigure(fd, &cfg)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	// Kernels before 5.8 lack LOOP_CONFIGURE: bind, then set the status.
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(fd, info); err != nil {
		_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// Detach unbinds a loop device. A device still held open (mounted, under a
// dm table) is detached by the kernel once released.
func (l Loops) Detach(device string) error {
	if !strings.HasPrefix(device, filepath.Join(l.Dev, "loop")) {
		return fmt.Errorf("%s is not a loop device", device)
	}
	f, err := os.OpenFile(device, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", device, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		if errors.Is(err, unix.ENXIO) {
			return nil // already detached
		}
		return fmt.Errorf("detach %s: %w", device, err)
	}
	return nil
}

// List returns every bound loop device, banger's or not.
func (l Loops) List() ([]Loop, error) {
	entries, err := os.ReadDir(filepath.Join(l.Sys, "block"))
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []Loop
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		sysDir := filepath.Join(l.Sys, "block", name)
		backing, err := os.ReadFile(filepath.Join(sysDir, "loop", "backing_file"))
		if err != nil {
			continue // unbound
		}
		lp := Loop{Device: filepath.Join(l.Dev, name), Backing: strings.TrimSpace(string(backing))}
		if ro, err := os.ReadFile(filepath.Join(sysDir, "ro")); err == nil {
			lp.ReadOnly = strings.TrimSpace(string(ro)) == "1"
		}
		lp.Name = loopFileName(lp.Device)
		out = append(out, lp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// loopFileName reads lo_file_name; "" when the device cannot be queried.
func loopFileName(device string) string {
	f, err := os.OpenFile(device, os.O_RDONLY, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return ""
	}
	name, _, _ := bytes.Cut(info.File_name[:], []byte{0})
	return string(name)
}
