package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/banger-dev/banger/internal/installmeta"
)

// tunDevice is where every VMM opens the tap the helper made for it.
const tunDevice = "/dev/net/tun"

// TunCheck says whether the VMM can attach to its tap: the helper creates
// each VM's tap and hands it to the owner, but the VMM (running as the
// owner) must open /dev/net/tun to attach to it, and hosts that tightened
// the device's mode break every networked VM with an opaque VMM error. On a
// system install it checks for the owner: by opening the device when the
// caller is the owner, from the device's mode and the owner's groups when
// doctor runs as someone else (root). In user mode it opens it as the caller.
func TunCheck(h Host, metaPath string, callerUID int) Check {
	return Check{Name: "tun device", Run: func(ctx context.Context) Result {
		dev := h.at(tunDevice)
		meta, err := installmeta.Read(metaPath)
		switch {
		case errors.Is(err, installmeta.ErrNotInstalled):
			return tunAsCaller(dev, "you", Warn)
		case err != nil:
			return Result{Status: Fail, Summary: "install metadata unreadable", Details: []string{err.Error()}}
		case callerUID == meta.OwnerUID:
			return tunAsCaller(dev, "the owner ("+meta.OwnerUser+")", Fail)
		}
		return tunForOwner(dev, meta)
	}}
}

// tunAsCaller opens dev read-write (no ioctl: opening alone creates nothing).
func tunAsCaller(dev, who string, failAs Status) Result {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err == nil {
		_ = f.Close()
		return Result{Status: Pass, Summary: who + " can open " + tunDevice}
	}
	return tunProblem(dev, who, failAs, err)
}

// tunForOwner decides from dev's mode whether the owner may open it
// read-write (ACLs are not read: the kernel's default mode is 0666).
func tunForOwner(dev string, meta installmeta.Meta) Result {
	who := "the owner (" + meta.OwnerUser + ")"
	fi, err := os.Stat(dev)
	if err != nil {
		return tunProblem(dev, who, Fail, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Result{Status: Warn, Summary: "cannot read the owner of " + tunDevice}
	}
	mode := fi.Mode().Perm()
	var need fs.FileMode
	switch {
	case int(st.Uid) == meta.OwnerUID:
		need = 0o600
	case inGroups(int(st.Gid), meta):
		need = 0o060
	default:
		need = 0o006
	}
	if mode&need == need {
		return Result{Status: Pass, Summary: who + " can open " + tunDevice}
	}
	return tunProblem(dev, who, Fail, fmt.Errorf("%s is mode %04o, uid %d, gid %d", tunDevice, mode, st.Uid, st.Gid))
}

func inGroups(gid int, meta installmeta.Meta) bool {
	if gid == meta.OwnerGID {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(meta.OwnerUID))
	if err != nil {
		return false
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false
	}
	for _, id := range ids {
		if id == strconv.Itoa(gid) {
			return true
		}
	}
	return false
}

func tunProblem(dev, who string, status Status, err error) Result {
	if errors.Is(err, fs.ErrNotExist) {
		return Result{Status: status, Summary: tunDevice + " is missing",
			Details: []string{"VMs get no network without it: `sudo modprobe tun` (a system install loads it at boot)"}}
	}
	return Result{Status: status, Summary: who + " cannot open " + tunDevice,
		Details: []string{err.Error(),
			"the VMM runs as " + who + " and attaches to its tap through it: `sudo chmod 0666 " + tunDevice + "` (the kernel's default), and a udev rule `KERNEL==\"tun\", MODE=\"0666\"` keeps it across reboots"}}
}
