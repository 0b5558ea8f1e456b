package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// OpenChannel opens the serial channel device (normally DefaultSerialPort)
// for reading and writing. It is kept open while a host is connected
// (closing a virtio port can lose what the host sent in between) and opened
// again once the host end hangs up (see Server.ServeChannel). A tty-backed
// channel (a pty in tests, a serial console) is put into raw mode so the
// line discipline never rewrites or echoes frames.
func OpenChannel(path string) (*os.File, error) {
	// O_NONBLOCK makes the runtime poll the fd, which is what gives reads
	// and writes deadlines.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open agent channel: %w", err)
	}
	// Fd() would switch the file back to blocking mode; reach the
	// descriptor through the raw conn instead.
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("agent channel %s: %w", path, err)
	}
	var rawErr error
	err = raw.Control(func(fd uintptr) {
		if term.IsTerminal(int(fd)) {
			_, rawErr = term.MakeRaw(int(fd))
		}
	})
	if err == nil {
		err = rawErr
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("agent channel %s: raw mode: %w", path, err)
	}
	return f, nil
}

// ResolveSerialPort returns path if it exists, else the /dev node of the
// virtio-serial port with the same name found through sysfs: without udev
// (a minimal initramfs) there is no /dev/virtio-ports/NAME link, only
// /dev/vportNpM.
func ResolveSerialPort(path string) string {
	return resolveSerialPort(path, "/sys/class/virtio-ports", "/dev")
}

func resolveSerialPort(path, sysDir, devDir string) string {
	if _, err := os.Stat(path); err == nil {
		return path
	}
	name := filepath.Base(path)
	ports, _ := filepath.Glob(filepath.Join(sysDir, "*", "name"))
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			dev := filepath.Join(devDir, filepath.Base(filepath.Dir(p)))
			if _, err := os.Stat(dev); err == nil {
				return dev
			}
		}
	}
	return path
}
