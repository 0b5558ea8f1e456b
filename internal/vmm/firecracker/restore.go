package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// MemBackendFile is MemoryBackend.BackendType for a memory file that
// Firecracker maps privately: pages load lazily and the file is never
// written, so any number of VMs can restore from one.
const MemBackendFile = "File"

// Names of the snapshot files inside a jail: where a restore stages them
// for Firecracker to read, and where a jailed Firecracker writes a new
// snapshot before the driver moves it to the caller's paths.
const (
	jailStateIn  = "snapshot.state"
	jailMemIn    = "snapshot.mem"
	jailStateOut = "snapshot-new.state"
	jailMemOut   = "snapshot-new.mem"
)

// Restore starts Firecracker for spec from a snapshot instead of booting
// its kernel: nothing is configured but the logger (the only resource
// Firecracker allows before a load besides metrics), then PUT
// /snapshot/load with the memory file as a File backend, spec's taps as
// network_overrides and spec's agent socket as vsock_override, a check
// that the snapshot's machine is spec's, and PATCH /vm Resumed. Drives come
// back at the paths the snapshot recorded, which name spec's disks (see
// drives.go). The load resets the vsock device: connections open at
// snapshot time are gone, guest listeners survive, so DialAgent works as
// soon as the guest runs again (callers retry ErrGuestNotListening as at
// boot). On failure nothing is left running.
func (d *Driver) Restore(ctx context.Context, spec vmm.LaunchSpec, files vmm.SnapshotFiles) (vmm.Instance, error) {
	inst, err := d.restore(ctx, spec, files)
	if err != nil {
		return nil, fmt.Errorf("restore firecracker for vm %q from snapshot %s: %w", spec.Name, files.State, err)
	}
	return inst, nil
}

func (d *Driver) restore(ctx context.Context, spec vmm.LaunchSpec, files vmm.SnapshotFiles) (*Instance, error) {
	if err := checkSnapshotFiles(files); err != nil {
		return nil, err
	}
	return d.run(ctx, spec, "restored", func(spec vmm.LaunchSpec, l layout, c *Client) ([]vmmproc.Step, error) {
		return d.restoreSteps(spec, l, c, files)
	})
}

// checkSnapshotFiles refuses, before any process starts, a snapshot whose
// files are missing or not regular files.
func checkSnapshotFiles(files vmm.SnapshotFiles) error {
	for _, f := range []struct{ what, path string }{{"state", files.State}, {"memory", files.Memory}} {
		if f.path == "" {
			return fmt.Errorf("the snapshot names no %s file; a firecracker snapshot needs both state and memory", f.what)
		}
		st, err := os.Stat(f.path)
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if err == nil && !st.Mode().IsRegular() {
			err = errors.New("not a regular file")
		}
		if err != nil {
			return fmt.Errorf("the snapshot's %s file %s is unusable (%v)", f.what, f.path, err)
		}
	}
	return nil
}

// restoreSteps is the configuration of a restore; see Restore.
func (d *Driver) restoreSteps(spec vmm.LaunchSpec, l layout, c *Client, files vmm.SnapshotFiles) ([]vmmproc.Step, error) {
	tr := &jailPaths{l: l}
	steps := d.loggerSteps(spec, tr, c)
	if l.jailRoot != "" {
		src := files
		files = vmm.SnapshotFiles{State: filepath.Join(l.jailRoot, jailStateIn), Memory: filepath.Join(l.jailRoot, jailMemIn)}
		staged := files
		steps = append(steps, vmmproc.Step{Name: "stage the snapshot into the jail", Do: func(context.Context) error {
			return stageSnapshot(src, staged)
		}})
	}
	load := SnapshotLoadParams{
		SnapshotPath: tr.path(files.State),
		MemBackend:   &MemoryBackend{BackendType: MemBackendFile, BackendPath: tr.path(files.Memory)},
	}
	for _, n := range spec.Network {
		load.NetworkOverrides = append(load.NetworkOverrides, NetworkOverride{IfaceID: n.ID, HostDevName: n.TapName})
	}
	if spec.Agent.UDSPath != "" {
		load.VsockOverride = &VsockOverride{UDSPath: tr.path(spec.Agent.UDSPath)}
	}
	steps = append(steps,
		vmmproc.Step{Name: "load snapshot", Do: func(ctx context.Context) error { return c.LoadSnapshot(ctx, load) }},
		// Loaded paused, so a snapshot of another machine never runs.
		vmmproc.Step{Name: "check the snapshot's machine", Do: func(ctx context.Context) error { return checkMachine(ctx, c, spec) }},
		vmmproc.Step{Name: "resume vm", Do: c.ResumeVM},
	)
	return steps, tr.firstErr
}

// checkMachine compares the restored machine with spec's vCPUs and memory
// (after a load Firecracker reports the snapshot's; only smt and
// cpu_template are left empty, per the API spec's /vm/config).
func checkMachine(ctx context.Context, c *Client, spec vmm.LaunchSpec) error {
	m, err := c.GetMachineConfig(ctx)
	if err != nil {
		return err
	}
	if m.VcpuCount != spec.VCPUs || m.MemSizeMib != spec.MemoryMiB {
		return fmt.Errorf("the snapshot is of a machine with %d vCPUs and %d MiB, but vm %q has %d vCPUs and %d MiB",
			m.VcpuCount, m.MemSizeMib, spec.Name, spec.VCPUs, spec.MemoryMiB)
	}
	return nil
}

// stageSnapshot puts the snapshot's files at staged, inside a jail: hard
// links when the jail is on the same file system, else copies (the jail
// is removed with them when the VMM exits).
func stageSnapshot(files, staged vmm.SnapshotFiles) error {
	for _, p := range [][2]string{{files.State, staged.State}, {files.Memory, staged.Memory}} {
		if err := linkOrCopy(p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// copyFile copies the regular file src to the new file dst (mode 0600).
func copyFile(src, dst string) (err error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	_, err = io.Copy(out, in)
	return err
}

// moveOut moves a file a jailed Firecracker wrote in its jail to dst, the
// caller's path: a rename on one file system, else a copy. Only a regular
// file is moved: the jail is writable by the VMM, which might have put a
// link there.
func moveOut(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	if err := copyFile(src, dst); err != nil {
		return err
	}
	return os.Remove(src)
}
