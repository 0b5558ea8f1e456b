package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// A QEMU snapshot is one file, SnapshotFiles.State: a banger header of
// stateHeaderSize bytes, then QEMU's migration stream (device state and
// guest memory, zero pages elided). QEMU writes and reads the stream
// through a descriptor the driver opened and passed over QMP (getfd, then
// migrate / migrate-incoming with "fd:NAME"), so no path reaches QEMU's
// command line and no shell runs.
//
// The header records what the stream can only be loaded into (the CPU
// model follows the acceleration; the devices follow the transport and the
// number of drives and interfaces; memory size and vCPUs must match), so
// Restore recreates that machine and refuses one that cannot be, in one
// sentence, before starting anything. It is written last: a file whose
// header is still zero was never finished.
const (
	stateHeaderSize = 4096
	stateMagic      = "banger qemu snapshot v1\n"
	// qemuStreamMagic starts every QEMU migration stream ("QEVM").
	qemuStreamMagic = "QEVM"
	// migrateFD is the name the state file's descriptor gets in QEMU.
	migrateFD = "banger-snapshot"
	// unlimitedBandwidth lifts QEMU's migration rate limit (128 MiB/s by
	// default in 7.2), which exists to spare a network link, not a local file.
	unlimitedBandwidth = 1 << 40
)

// ErrNotPaused means CreateSnapshot was asked for a guest that is not
// paused (running, or shut down).
var ErrNotPaused = errors.New("the guest is not paused; pause it before taking a snapshot")

// ErrBadSnapshot is matched (errors.Is) by every Restore failure that comes
// from the state file: missing, never finished, truncated, corrupt, or of
// a machine this VM is not.
var ErrBadSnapshot = errors.New("bad snapshot state file")

// badState is an ErrBadSnapshot that says what is wrong with which file.
type badState struct {
	path, why string
}

func (e *badState) Error() string        { return "snapshot state file " + e.path + " " + e.why }
func (e *badState) Is(target error) bool { return target == ErrBadSnapshot }

// machine is what a QEMU migration stream can only be loaded into.
type machine struct {
	Accel     Accel     `json:"accel"`
	Transport Transport `json:"transport"`
	VCPUs     int       `json:"vcpus"`
	MemoryMiB int       `json:"memory_mib"`
	Drives    int       `json:"drives"`
	NICs      int       `json:"nics"`
}

func machineOf(spec vmm.LaunchSpec, accel Accel, tr Transport) machine {
	return machine{
		Accel: accel, Transport: tr, VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB,
		Drives: 1 + len(spec.ExtraDrives), NICs: len(spec.Network),
	}
}

// shape is the part of a machine the VM's spec decides.
func (m machine) shape() string {
	return fmt.Sprintf("%d vCPUs, %d MiB of memory, %d drives and %d network interfaces", m.VCPUs, m.MemoryMiB, m.Drives, m.NICs)
}

// stateHeader is the JSON in a state file's header.
type stateHeader struct {
	machine
	QEMUVersion string `json:"qemu_version"`
	// StreamBytes is the length of QEMU's stream after the header, so a
	// truncated file is refused before QEMU starts.
	StreamBytes int64 `json:"stream_bytes"`
}

// CreateSnapshot writes the paused guest's whole state (devices and
// memory) to files.State, which it creates (mode 0600, handed to the
// driver's Owner) or replaces; files.Memory is unused. The guest stays
// paused. A running guest is refused (ErrNotPaused); on any failure the
// file is removed. SnapshotTimeout bounds the write.
func (i *Instance) CreateSnapshot(ctx context.Context, files vmm.SnapshotFiles) error {
	if err := i.createSnapshot(ctx, files.State); err != nil {
		return fmt.Errorf("snapshot vm %q: %w", i.spec.Name, err)
	}
	return nil
}

func (i *Instance) createSnapshot(ctx context.Context, path string) error {
	if path == "" {
		return errors.New("no state file path given")
	}
	var created, started bool
	err := i.qmp(ctx, func(c *QMPClient) error {
		if err := ensurePaused(ctx, c); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("create state file: %w", err)
		}
		created = true
		err = i.writeState(ctx, c, f, &started)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close state file: %w", cerr)
		}
		return err
	})
	if err == nil {
		err = i.files.File(path)
	}
	if err != nil && started {
		i.cancelMigration()
	}
	if err != nil && created {
		_ = os.Remove(path)
	}
	return err
}

// writeState writes the header's room, QEMU's stream after it, then the
// header, and syncs f.
func (i *Instance) writeState(ctx context.Context, c *QMPClient, f *os.File, started *bool) error {
	// QEMU writes from the descriptor's offset: past the header's room.
	if _, err := f.Write(make([]byte, stateHeaderSize)); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	n, err := i.migrateTo(ctx, c, f, started)
	if err != nil {
		return err
	}
	hdr := stateHeader{machine: machineOf(i.spec, i.accel, i.transport), QEMUVersion: c.Version.String(), StreamBytes: n}
	if err := writeHeader(f, hdr); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync state file: %w", err)
	}
	return nil
}

// ensurePaused checks the guest is paused. A guest paused after an earlier
// snapshot ("postmigrate") is made an ordinarily paused one first: QEMU
// 7.2 refuses to migrate it again ("Can't migrate the vm that was paused
// due to previous migration"), and only cont clears that, so the guest
// runs for the moment between cont and stop.
func ensurePaused(ctx context.Context, c *QMPClient) error {
	st, err := c.QueryStatus(ctx)
	if err != nil {
		return err
	}
	switch st.Status {
	case "paused":
		return nil
	case "postmigrate":
		if err := c.Cont(ctx); err != nil {
			return err
		}
		return c.Stop(ctx)
	default:
		return fmt.Errorf("%w (qemu reports %q)", ErrNotPaused, st.Status)
	}
}

// migrateTo has QEMU write its migration stream to f from f's offset and
// returns the stream's length. started is set once QEMU accepted the
// migration, so a failure after it is cancelled.
func (i *Instance) migrateTo(ctx context.Context, c *QMPClient, f *os.File, started *bool) (int64, error) {
	if err := c.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": unlimitedBandwidth}, nil); err != nil {
		return 0, err
	}
	if err := c.SendFile(ctx, migrateFD, f); err != nil {
		return 0, err
	}
	if err := c.Execute(ctx, "migrate", map[string]string{"uri": "fd:" + migrateFD}, nil); err != nil {
		_ = c.Execute(ctx, "closefd", map[string]string{"fdname": migrateFD}, nil)
		return 0, err
	}
	*started = true
	wctx, cancel := context.WithTimeout(ctx, i.snapshotTimeout)
	defer cancel()
	var last Migration
	err := i.poll(wctx, func(ctx context.Context) (bool, error) {
		m, err := c.QueryMigrate(ctx)
		last = m
		if err != nil {
			return false, err
		}
		switch m.Status {
		case "completed":
			return true, nil
		case "failed":
			return false, fmt.Errorf("qemu failed to write the state: %s", m.ErrorDesc)
		case "cancelling", "cancelled":
			return false, errors.New("the migration writing the state was cancelled")
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("qemu did not finish writing the state within %v (migration %s, %d of %d bytes of memory sent)",
				i.snapshotTimeout, last.Status, last.RAM.Transferred, last.RAM.Total)
		}
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat state file: %w", err)
	}
	return st.Size() - stateHeaderSize, nil
}

// cancelMigration stops a migration a failed CreateSnapshot left going, on
// a connection of its own (the failed one may be unusable), so QEMU stops
// writing; the guest stays paused.
func (i *Instance) cancelMigration() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := i.qmp(ctx, func(c *QMPClient) error { return c.Execute(ctx, "migrate_cancel", nil, nil) }); err != nil {
		i.log.Warn("cancel the snapshot's migration", "err", err)
	}
}

// poll calls check every few milliseconds (backing off to 50 ms) until it
// reports done or fails, QEMU exits, or ctx ends.
func (i *Instance) poll(ctx context.Context, check func(context.Context) (bool, error)) error {
	delay := 2 * time.Millisecond
	for {
		done, err := check(ctx)
		if err != nil || done {
			return err
		}
		select {
		case <-i.Done():
			return fmt.Errorf("qemu %s", i.Exit())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*3/2, 50*time.Millisecond)
	}
}

func writeHeader(f *os.File, hdr stateHeader) error {
	b, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("encode state header: %w", err)
	}
	b = append(append([]byte(stateMagic), b...), '\n')
	if len(b) > stateHeaderSize {
		return fmt.Errorf("state header of %d bytes does not fit in %d", len(b), stateHeaderSize)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write state header: %w", err)
	}
	return nil
}

// openState opens a state file for Restore, checks it is complete, and
// leaves its offset at the start of QEMU's stream.
func openState(path string) (*os.File, stateHeader, error) {
	var hdr stateHeader
	if path == "" {
		return nil, hdr, errors.New("no snapshot state file given")
	}
	// O_NONBLOCK: a FIFO planted at path must not hang the open; it is
	// refused below as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, hdr, &badState{path, "does not exist; the snapshot is incomplete or was deleted"}
	}
	if err != nil {
		return nil, hdr, fmt.Errorf("open snapshot state file: %w", err)
	}
	hdr, err = checkState(f, path)
	if err != nil {
		f.Close()
		return nil, hdr, err
	}
	return f, hdr, nil
}

func checkState(f *os.File, path string) (stateHeader, error) {
	var hdr stateHeader
	st, err := f.Stat()
	if err != nil {
		return hdr, fmt.Errorf("stat snapshot state file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return hdr, &badState{path, "is not a regular file"}
	}
	head := make([]byte, stateHeaderSize+len(qemuStreamMagic))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return hdr, fmt.Errorf("read snapshot state file: %w", err)
	}
	head = head[:n]
	switch {
	case len(bytes.Trim(head[:min(n, stateHeaderSize)], "\x00")) == 0:
		return hdr, &badState{path, "was never finished (its header is empty); delete the snapshot and take it again"}
	case !bytes.HasPrefix(head, []byte(stateMagic)):
		return hdr, &badState{path, "is not a banger QEMU snapshot (it lacks the banger header)"}
	}
	line, _, _ := bytes.Cut(head[len(stateMagic):], []byte("\n"))
	if err := json.Unmarshal(line, &hdr); err != nil {
		return hdr, &badState{path, "has a corrupt header: " + err.Error()}
	}
	if got := st.Size() - stateHeaderSize; got != hdr.StreamBytes {
		return hdr, &badState{path, fmt.Sprintf("is truncated or corrupt: it holds %d bytes of QEMU state where its header says %d", max(got, 0), hdr.StreamBytes)}
	}
	if !bytes.Equal(head[stateHeaderSize:], []byte(qemuStreamMagic)) {
		return hdr, &badState{path, "is corrupt: its QEMU state does not start with QEMU's stream magic"}
	}
	if _, err := f.Seek(stateHeaderSize, io.SeekStart); err != nil {
		return hdr, fmt.Errorf("seek snapshot state file: %w", err)
	}
	return hdr, nil
}

// Restore starts QEMU for spec from the snapshot in files.State instead of
// booting: the same command line as Launch (spec's disk, tap, agent socket
// and run dir, which may differ from the saved VM's) plus -incoming, the
// stream loaded over QMP, then the guest resumed. It returns once the
// guest runs, supervised as after Launch (OnSpawn, HeldFiles). The
// acceleration and agent transport are the snapshot's; its vCPUs, memory,
// drives and interfaces must be spec's. A missing, unfinished, truncated
// or corrupt file, or one of another machine, fails with ErrBadSnapshot,
// before QEMU starts where the header shows it, else with QEMU killed and
// gone.
func (d *Driver) Restore(ctx context.Context, spec vmm.LaunchSpec, files vmm.SnapshotFiles) (vmm.Instance, error) {
	inst, err := d.restore(ctx, spec, files.State)
	if err != nil {
		return nil, fmt.Errorf("restore qemu for vm %q: %w", spec.Name, err)
	}
	return inst, nil
}

func (d *Driver) restore(ctx context.Context, spec vmm.LaunchSpec, path string) (*Instance, error) {
	f, hdr, err := openState(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := d.fits(hdr.machine, spec, path); err != nil {
		return nil, err
	}
	want := Options{Accel: hdr.Accel, Transport: hdr.Transport, Incoming: "defer"}
	return d.start(ctx, spec, want, awaitingStream, func(inst *Instance) []vmmproc.Step {
		return []vmmproc.Step{
			{Name: "load the snapshot", Do: func(ctx context.Context) error { return inst.load(ctx, f, path, hdr) }},
			{Name: "resume the guest", Do: inst.resumeRestored},
		}
	})
}

// fits refuses a snapshot whose machine cannot be recreated for spec here.
func (d *Driver) fits(saved machine, spec vmm.LaunchSpec, path string) error {
	if want := machineOf(spec, saved.Accel, saved.Transport); want != saved {
		return &badState{path, fmt.Sprintf("is of a VM with %s, but this VM has %s; restore it into a VM of the same shape", saved.shape(), want.shape())}
	}
	switch saved.Accel {
	case AccelKVM:
		if accel, why := d.accel(); accel != AccelKVM {
			return &badState{path, fmt.Sprintf("was taken under kvm, which this driver cannot use (%s)", why)}
		}
	case AccelTCG:
	default:
		return &badState{path, fmt.Sprintf("names acceleration %q, not kvm or tcg", saved.Accel)}
	}
	if saved.Transport != TransportSerial && saved.Transport != TransportVsock {
		return &badState{path, fmt.Sprintf("names agent transport %q, not %s or %s", saved.Transport, TransportVsock, TransportSerial)}
	}
	return nil
}

// awaitingStream is Restore's readiness: QEMU started with -incoming defer
// waits for the stream.
func awaitingStream(st Status) error {
	if st.Status != "inmigrate" {
		return fmt.Errorf("guest is %s, not waiting for its snapshot", st.Status)
	}
	return nil
}

// load hands f, at the start of QEMU's stream, to the QEMU waiting for it
// and waits until the state is loaded, within SnapshotTimeout. QEMU exits
// when the stream does not load; its last words name the cause.
func (i *Instance) load(ctx context.Context, f *os.File, path string, hdr stateHeader) error {
	wctx, cancel := context.WithTimeout(ctx, i.snapshotTimeout)
	defer cancel()
	start := time.Now()
	defer func() { i.log.Debug("snapshot load ended", "took", time.Since(start)) }()
	err := i.qmp(wctx, func(c *QMPClient) error {
		if v := c.Version.String(); v != hdr.QEMUVersion {
			i.log.Warn("restoring a snapshot taken by another qemu version", "saved_by", hdr.QEMUVersion, "qemu", v)
		}
		if err := c.SendFile(wctx, migrateFD, f); err != nil {
			return err
		}
		if err := c.Execute(wctx, "migrate-incoming", map[string]string{"uri": "fd:" + migrateFD}, nil); err != nil {
			return err
		}
		return i.poll(wctx, func(ctx context.Context) (bool, error) {
			st, err := c.QueryStatus(ctx)
			return err == nil && st.Status != "inmigrate", err
		})
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("qemu did not finish loading %s within %v", path, i.snapshotTimeout)
	}
	// A stream QEMU cannot load makes it exit, which breaks QMP first:
	// give the reaper a moment to report the exit and QEMU's reason.
	select {
	case <-i.Done():
		return &badState{path, fmt.Sprintf("could not be loaded: qemu %s%s", i.Exit(), vmmproc.LogTail(vmmLogPath(i.spec)))}
	case <-time.After(2 * time.Second):
		return err
	}
}

// resumeRestored runs the loaded guest (a snapshot of a paused guest loads
// paused) and checks it runs.
func (i *Instance) resumeRestored(ctx context.Context) error {
	return i.qmp(ctx, func(c *QMPClient) error {
		if err := c.Cont(ctx); err != nil {
			return err
		}
		st, err := c.QueryStatus(ctx)
		if err == nil && !st.Running {
			err = fmt.Errorf("guest is %s after cont, not running", st.Status)
		}
		return err
	})
}
