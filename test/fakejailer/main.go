// Command fakejailer stands in for Firecracker's jailer where the real one
// is not installed. It follows the jailer's documented contract
// (docs/jailer.md in the Firecracker repository) step by step, for real: it
// must run as root, validates the id and the exec file's name, marks every
// descriptor but stdio close-on-exec, clears the environment, builds
// <chroot base>/<exec name>/<id>/root, copies the exec file in, enters a new
// mount namespace and pivot_roots into the jail, makes /dev/kvm and
// /dev/net/tun, hands the jail's folders to --uid/--gid, joins --netns, daemonizes if
// asked, drops privileges and execs the copy with --id=, --start-time-us= and
// --start-time-cpu-us= followed by the arguments after "--".
//
// What it does not model: cgroups (--cgroup, --parent-cgroup and
// --cgroup-version are parsed and validated, not applied), --new-pid-ns and
// --resource-limit beyond the default no-file bound.
//
// One test-only addition: if <jailer binary>.testconf exists (JSON, see
// testConf), the files it lists are copied into the jail and its variables
// set for the exec'd program. The fake Firecracker needs the API spec and a
// stand-in guest inside its jail; a real Firecracker needs neither.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The namespace and root changes apply to the calling thread; the exec that
// follows must come from the same one.
func init() { runtime.LockOSThread() }

const defaultChrootBase = "/srv/jailer"

type options struct {
	id, execFile, chrootBase, netns string
	uid, gid                        int
	daemonize, newPidNS             bool
	cgroups, resourceLimits         []string
	parentCgroup, cgroupVersion     string
	firecrackerArgs                 []string
}

// testConf is the test-only sidecar.
type testConf struct {
	// Env is KEY=VALUE pairs for the exec'd program.
	Env []string `json:"env"`
	// Copy maps a path inside the jail to a host file copied there.
	Copy map[string]string `json:"copy"`
	// Nodes are character devices made inside the jail (e.g. /dev/null).
	Nodes []charDev `json:"nodes"`
}

// charDev is a character device node to make in the jail.
type charDev struct {
	Path  string `json:"path"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "fake-jailer: %v\n", err)
		os.Exit(1)
	}
}

func parse(args []string) (options, error) {
	o := options{uid: -1, gid: -1, chrootBase: defaultChrootBase, cgroupVersion: "1"}
	value := func(i *int, name string) (string, error) {
		// The jailer's parser takes a following "--…" for the next option,
		// not a value: "--id --help" is a missing id.
		if *i+1 >= len(args) || strings.HasPrefix(args[*i+1], "--") {
			return "", fmt.Errorf("argument --%s requires a value", name)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.firecrackerArgs = args[i+1:]
			break
		}
		name, inline, hasInline := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			return o, fmt.Errorf("unexpected argument %q", a)
		}
		get := func() (string, error) {
			if hasInline {
				return inline, nil
			}
			return value(&i, name)
		}
		var err error
		var v string
		switch name {
		case "daemonize":
			o.daemonize = true
		case "new-pid-ns":
			o.newPidNS = true
		case "id", "exec-file", "uid", "gid", "chroot-base-dir", "netns", "cgroup", "resource-limit", "parent-cgroup", "cgroup-version":
			if v, err = get(); err != nil {
				return o, err
			}
		default:
			return o, fmt.Errorf("found argument '--%s' which wasn't expected", name)
		}
		switch name {
		case "id":
			o.id = v
		case "exec-file":
			o.execFile = v
		case "uid":
			o.uid, err = strconv.Atoi(v)
		case "gid":
			o.gid, err = strconv.Atoi(v)
		case "chroot-base-dir":
			o.chrootBase = v
		case "netns":
			o.netns = v
		case "cgroup":
			o.cgroups = append(o.cgroups, v)
		case "resource-limit":
			o.resourceLimits = append(o.resourceLimits, v)
		case "parent-cgroup":
			o.parentCgroup = v
		case "cgroup-version":
			o.cgroupVersion = v
		}
		if err != nil {
			return o, fmt.Errorf("invalid --%s %q", name, v)
		}
	}
	switch {
	case o.id == "":
		return o, errors.New("missing argument: id")
	case o.execFile == "":
		return o, errors.New("missing argument: exec-file")
	case o.uid < 0 || o.gid < 0:
		return o, errors.New("missing argument: uid and gid")
	case o.cgroupVersion != "1" && o.cgroupVersion != "2":
		return o, fmt.Errorf("invalid cgroup version %q", o.cgroupVersion)
	}
	if len(o.id) > 64 || strings.Trim(o.id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return o, fmt.Errorf("invalid instance id %q: use at most 64 letters, digits and hyphens", o.id)
	}
	if !strings.Contains(filepath.Base(o.execFile), "firecracker") {
		return o, fmt.Errorf("invalid exec file %q: the file name must include \"firecracker\"", o.execFile)
	}
	if fi, err := os.Stat(o.execFile); err != nil || !fi.Mode().IsRegular() {
		return o, fmt.Errorf("invalid exec file %q: not a regular file", o.execFile)
	}
	return o, nil
}

// version is the jailer release this fake imitates (the fake Firecracker's).
const version = "1.16.1"

func run(args []string) error {
	start := time.Now()
	if len(args) == 1 && args[0] == "--version" {
		fmt.Printf("Jailer v%s\n", version)
		return nil
	}
	o, err := parse(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the jailer must run as root")
	}
	conf, err := loadTestConf()
	if err != nil {
		return err
	}
	if err := cloexecAll(); err != nil {
		return err
	}
	os.Clearenv()

	execName := filepath.Base(o.execFile)
	chroot := filepath.Join(o.chrootBase, execName, o.id, "root")
	if err := os.MkdirAll(chroot, 0o755); err != nil {
		return fmt.Errorf("create chroot dir: %w", err)
	}
	if err := copyFile(o.execFile, filepath.Join(chroot, execName), 0o755); err != nil {
		return fmt.Errorf("copy exec file: %w", err)
	}
	for inside, host := range conf.Copy {
		if err := copyFile(host, filepath.Join(chroot, inside), 0o755); err != nil {
			return fmt.Errorf("testconf copy %s: %w", inside, err)
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 2048, Max: 2048}); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	var devNull *os.File
	if o.daemonize {
		if devNull, err = os.OpenFile("/dev/null", os.O_RDWR, 0); err != nil {
			return err
		}
	}
	netnsFD := -1
	if o.netns != "" {
		if netnsFD, err = unix.Open(o.netns, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("open netns %s: %w", o.netns, err)
		}
	}
	if err := pivotInto(chroot); err != nil {
		return err
	}
	nodes := append([]charDev{{"/dev/net/tun", 10, 200}, {"/dev/kvm", 10, 232}}, conf.Nodes...)
	for _, n := range nodes {
		if err := os.MkdirAll(filepath.Dir(n.Path), 0o755); err != nil {
			return err
		}
		if err := unix.Mknod(n.Path, unix.S_IFCHR|0o600, int(unix.Mkdev(n.Major, n.Minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", n.Path, err)
		}
		if err := os.Chown(n.Path, o.uid, o.gid); err != nil {
			return err
		}
	}
	// The jailer hands its folder hierarchy (/, /dev, /dev/net) to the
	// jailed user, not just the root; nothing below is chowned recursively.
	for _, d := range []string{"/dev/net", "/dev", "/"} {
		if err := os.Chown(d, o.uid, o.gid); err != nil {
			return fmt.Errorf("chown jail folder %s: %w", d, err)
		}
	}
	if netnsFD >= 0 {
		if err := unix.Setns(netnsFD, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join netns: %w", err)
		}
		_ = unix.Close(netnsFD)
	}
	if o.daemonize {
		if _, err := unix.Setsid(); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
		for fd := 0; fd < 3; fd++ {
			if err := unix.Dup2(int(devNull.Fd()), fd); err != nil {
				return err
			}
		}
		_ = devNull.Close()
	}
	if err := unix.Setgroups(nil); err != nil {
		return err
	}
	if err := unix.Setgid(o.gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := unix.Setuid(o.uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	argv := append([]string{"/" + execName,
		"--id=" + o.id,
		"--start-time-us=" + strconv.FormatInt(start.UnixMicro(), 10),
		"--start-time-cpu-us=0"}, o.firecrackerArgs...)
	return unix.Exec(argv[0], argv, conf.Env)
}

// pivotInto makes dir the root of a new mount namespace, as the jailer does.
func pivotInto(dir string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount the jail: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "old_root"), 0o700); err != nil {
		return err
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "old_root"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount("old_root", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the old root: %w", err)
	}
	if err := os.Remove("old_root"); err != nil {
		return err
	}
	return unix.Chroot(".")
}

// cloexecAll marks every descriptor but stdio close-on-exec: the jailer
// closes them; the Go runtime still needs its own until the exec.
func cloexecAll() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

func loadTestConf() (testConf, error) {
	var c testConf
	self, err := os.Executable()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(self + ".testconf")
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s.testconf: %w", self, err)
	}
	return c, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
