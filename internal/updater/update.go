package updater

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
)

// DefaultBaseURL is the release server `banger update` asks unless told
// otherwise: manifest.json at its root, each version's files under
// /<version>/.
const DefaultBaseURL = "https://releases.banger.dev"

// Defaults for Options fields left zero.
const (
	DefaultDoctorAttempts = 5
	DefaultDoctorInterval = 2 * time.Second
	DefaultCommandTimeout = 2 * time.Minute
)

// Options configure Plan and Apply. Every outside effect comes in through
// here, so the whole update runs in tests against a temporary root, a
// local HTTPS server and a fake Runner.
type Options struct {
	// BaseURL is the release server (DefaultBaseURL when empty).
	BaseURL string
	// Channel is followed when Version is empty (DefaultChannel when empty).
	Channel string
	// Version, when set, installs exactly that release, even if it is not
	// newer than the installed one (a reinstall or a deliberate downgrade).
	Version string
	// Arch selects the tarball (runtime.GOARCH when empty).
	Arch string
	// PublicKey verifies SHA256SUMS; EmbeddedPublicKey() in production.
	PublicKey string
	Fetcher   Fetcher
	// Runner runs the staged binaries, systemctl and the new banger doctor.
	Runner system.Runner
	// Root is the install root: "" or "/" for the real system.
	Root string
	// Running is the build doing the update; it stands for the current
	// version when no install is recorded.
	Running buildinfo.Info
	// Units are the systemd units restarted, in order, after the swap
	// (the root helper before bangerd, which connects to it on start).
	// Empty for a scratch root that has no services.
	Units []string
	// Progress receives one line per step (stderr in the CLI); may be nil.
	Progress io.Writer
	// DoctorAttempts and DoctorInterval give a freshly restarted daemon
	// time to open its socket before a failing doctor counts.
	DoctorAttempts int
	DoctorInterval time.Duration
	// CommandTimeout bounds each command the update runs: the staged
	// binaries' version and schema checks, doctor and systemctl
	// (DefaultCommandTimeout). A command still running then is killed with
	// everything it started.
	CommandTimeout time.Duration
	// Sleep waits between doctor attempts (a ctx-aware time.Sleep when nil).
	Sleep func(ctx context.Context, d time.Duration) error
}

func (o Options) withDefaults() Options {
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.DoctorAttempts <= 0 {
		o.DoctorAttempts = DefaultDoctorAttempts
	}
	if o.DoctorInterval <= 0 {
		o.DoctorInterval = DefaultDoctorInterval
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	return o
}

// metaPath is install.toml under the install root.
func (o Options) metaPath() string { return paths.System(o.Root).InstallMetaPath() }

// env points commands at the install root when it is not the real one,
// the same way the binaries themselves find it (BANGER_SYSTEM_ROOT).
func (o Options) env() []string {
	if o.Root == "" || o.Root == "/" {
		return nil
	}
	return []string{"BANGER_SYSTEM_ROOT=" + o.Root}
}

// Action is what Apply would do.
type Action string

// The actions.
const (
	ActionUpdate    Action = "update"
	ActionNone      Action = "none"
	ActionReinstall Action = "reinstall"
	ActionDowngrade Action = "downgrade"
)

// Plan is the answer to "what would `banger update` do": the current and
// offered versions and, when Apply would refuse, why.
type Plan struct {
	Current buildinfo.Info `json:"current"`
	// Installed is true when install.toml records a system install;
	// Current is then its build, else the running binary's.
	Installed bool    `json:"installed"`
	Release   Release `json:"release"`
	Action    Action  `json:"action"`
	// Blocked is the reason Apply would refuse, empty when it would not.
	Blocked  string `json:"blocked,omitempty"`
	blockErr error
}

// Err is the error Apply would return for a blocked plan, nil otherwise.
func (p Plan) Err() error { return p.blockErr }

// UpdateAvailable reports whether Apply would install something.
func (p Plan) UpdateAvailable() bool { return p.Action != ActionNone && p.Blocked == "" }

// Check fetches the manifest and decides what Apply would do, without
// changing anything. It needs no privileges (it backs `--check`).
func Check(ctx context.Context, opts Options) (Plan, error) {
	opts = opts.withDefaults()
	var p Plan
	meta, err := installmeta.Read(opts.metaPath())
	switch {
	case err == nil:
		p.Current, p.Installed = meta.Build(), true
	case errors.Is(err, installmeta.ErrNotInstalled):
		p.Current = opts.Running
	default:
		return p, err
	}
	m, err := FetchManifest(ctx, opts.Fetcher, opts.BaseURL)
	if err != nil {
		return p, err
	}
	if p.Release, err = m.Resolve(opts.BaseURL, opts.Channel, opts.Version, opts.Arch); err != nil {
		return p, err
	}
	p.Action = decide(p.Current.Version, p.Release.Version, opts.Version != "")
	p.block(opts)
	return p, nil
}

func decide(current, offered string, explicit bool) Action {
	c, ok := compareVersions(offered, current)
	switch {
	case !ok:
		// A dev build has no version to compare: any release replaces it.
		return ActionUpdate
	case c > 0:
		return ActionUpdate
	case !explicit:
		return ActionNone
	case c == 0:
		return ActionReinstall
	}
	return ActionDowngrade
}

// block records the first reason Apply must refuse this plan.
func (p *Plan) block(opts Options) {
	set := func(err error) {
		if p.blockErr == nil {
			p.blockErr, p.Blocked = err, err.Error()
		}
	}
	if p.Action == ActionNone {
		return
	}
	if _, err := ParsePublicKey(opts.PublicKey); err != nil {
		set(err)
	}
	if !p.Installed {
		set(fmt.Errorf("%w (no %s): `banger update` replaces a system install; create one with `sudo banger system install`",
			installmeta.ErrNotInstalled, opts.metaPath()))
	}
	if min := p.Release.MinCompatibleVersion; min != "" {
		if c, ok := compareVersions(p.Current.Version, min); ok && c < 0 {
			set(fmt.Errorf("%s can only be installed over %s or newer, and %s is installed; first run `sudo banger update --version %s`",
				p.Release.Version, min, p.Current.Version, min))
		}
	}
}

// Result is what Apply did.
type Result struct {
	From    buildinfo.Info `json:"from"`
	To      buildinfo.Info `json:"to"`
	Release Release        `json:"release"`
	Action  Action         `json:"action"`
	// SchemaCheck is the staged bangerd's verdict on the state database.
	SchemaCheck string               `json:"schema_check,omitempty"`
	Replaced    []system.Replacement `json:"replaced,omitempty"`
	// Warnings are problems that did not fail the update (a backup that
	// could not be removed).
	Warnings []string `json:"warnings,omitempty"`
}

// RolledBackError reports an update that failed after the swap began and
// was rolled back. RollbackErr is nil when the previous install is fully
// restored (and its units restarted); otherwise it says what is left to
// fix by hand.
type RolledBackError struct {
	Version     string
	Step        string
	Err         error
	RollbackErr error
}

func (e *RolledBackError) Error() string {
	if e.RollbackErr == nil {
		return fmt.Sprintf("update to %s failed at %s (%v); the previous install was restored and restarted", e.Version, e.Step, e.Err)
	}
	return fmt.Sprintf("update to %s failed at %s (%v), and restoring the previous install failed too: %v", e.Version, e.Step, e.Err, e.RollbackErr)
}

func (e *RolledBackError) Unwrap() []error {
	if e.RollbackErr == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.RollbackErr}
}

// Apply installs plan's release: download and verify, stage, ask the
// staged binaries for their version and schema verdict, swap, record the
// new build in install.toml, restart the units and run the new banger
// doctor. A failure before the swap leaves the install untouched; a failure
// after it rolls everything back and restarts the previous binaries
// (*RolledBackError). The .previous backups are removed only after doctor
// passes (no check fails that did not fail before the update). Apply must
// run as root on a real system.
func Apply(ctx context.Context, opts Options, plan Plan) (res Result, err error) {
	opts = opts.withDefaults()
	res = Result{From: plan.Current, Release: plan.Release, Action: plan.Action}
	if plan.blockErr != nil {
		return res, plan.blockErr
	}
	if plan.Action == ActionNone || plan.Action == "" {
		return res, nil
	}
	progress := opts.Progress
	metaPath := opts.metaPath()
	oldMeta, err := os.ReadFile(metaPath)
	if err != nil {
		return res, fmt.Errorf("read install metadata before updating: %w", err)
	}

	staging := DefaultStagingDir(opts.Root)
	if err := EnsureStagingDir(staging); err != nil {
		return res, err
	}
	lock, err := system.TryLock(staging)
	if errors.Is(err, system.ErrLocked) {
		return res, errors.New("another `banger update` is running; wait for it to finish")
	}
	if err != nil {
		return res, err
	}
	defer func() { _ = lock.Unlock() }()
	if err := PrepareCleanStaging(staging); err != nil {
		return res, err
	}
	// Downloads and staged binaries are only needed until the swap is
	// settled either way; do not leave 100 MB behind.
	defer func() {
		if err := PrepareCleanStaging(staging); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}()

	logf(progress, "downloading %s from %s", plan.Release.Version, plan.Release.URL)
	dl, err := DownloadRelease(ctx, opts.Fetcher, opts.PublicKey, plan.Release, staging, progress)
	if err != nil {
		return res, err
	}
	staged, err := StageTarball(dl.Tarball, filepath.Join(staging, "release"))
	if err != nil {
		return res, err
	}
	logf(progress, "unpacked %s, %s and %s", BangerBinary, BangerdBinary, VsockAgentBinary)
	if res.To, err = stagedBuild(ctx, opts, staged.Banger); err != nil {
		return res, err
	}
	if res.To.Version != plan.Release.Version {
		return res, fmt.Errorf("the tarball of %s holds banger %s; refusing a release that is not what it claims to be",
			plan.Release.Version, quoteOutput([]byte(res.To.Version)))
	}
	if res.SchemaCheck, err = checkStagedSchema(ctx, opts, staged.Bangerd); err != nil {
		return res, fmt.Errorf("refusing to install %s: %w", plan.Release.Version, err)
	}
	logf(progress, "state database: %s", res.SchemaCheck)

	targets := DefaultInstallTargets(opts.Root)
	// Failures the current install already has are not the new release's
	// fault; without this baseline, one unrelated FAIL would roll back every
	// update, including the one that fixes it.
	baseline := baselineFailures(ctx, opts, targets.Banger)

	// Point of no return for the install: from here every failure rolls
	// back, working from what the swap actually replaced.
	swap, err := Swap(staged, targets)
	res.Replaced = swap.Replaced
	undo := func(step string, cause error, restart bool) error {
		res.Replaced = nil
		return &RolledBackError{Version: plan.Release.Version, Step: step, Err: cause,
			RollbackErr: rollbackAll(ctx, opts, swap, metaPath, oldMeta, restart)}
	}
	if err != nil {
		return res, undo("replacing the binaries", err, false)
	}
	for _, r := range swap.Replaced {
		logf(progress, "replaced %s", r.Target)
	}
	if _, err := installmeta.UpdateBuildInfo(metaPath, res.To); err != nil {
		return res, undo("recording the new build in "+metaPath, err, false)
	}
	if err := restartUnits(ctx, opts); err != nil {
		return res, undo("restarting the services", err, true)
	}
	if err := verifyWithDoctor(ctx, opts, targets.Banger, baseline); err != nil {
		return res, undo("banger doctor", err, true)
	}
	if err := CleanupBackups(swap); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	} else {
		logf(progress, "doctor found no new failures; removed the %s backups", system.BackupSuffix)
	}
	return res, nil
}

// rollbackAll restores the binaries and install.toml and, when the units
// were (maybe) restarted onto the new binaries, restarts them onto the old
// ones. It runs even when ctx was cancelled (that cancellation may be why
// we are here), each command bounded by the command timeout.
func rollbackAll(ctx context.Context, opts Options, swap SwapResult, metaPath string, oldMeta []byte, restart bool) error {
	logf(opts.Progress, "rolling back to the previous install")
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if err := Rollback(swap); err != nil {
		errs = append(errs, err)
	}
	if err := system.WriteFileAtomic(metaPath, oldMeta, 0o644); err != nil {
		errs = append(errs, fmt.Errorf("restore %s: %w", metaPath, err))
	}
	if restart {
		// The new daemon may have crash-looped into systemd's start limit
		// while doctor waited for it; systemd then refuses the restart
		// below ("start of the service was attempted too often") until the
		// counter is reset. Best effort: the restart reports what is left.
		_ = runChecked(ctx, opts, system.Command{Path: "systemctl", Args: append([]string{"reset-failed"}, opts.Units...)})
		if err := restartUnits(ctx, opts); err != nil {
			errs = append(errs, fmt.Errorf("%w; run `sudo systemctl restart %s` once the files are fixed", err, strings.Join(opts.Units, " ")))
		}
	}
	return errors.Join(errs...)
}

func restartUnits(ctx context.Context, opts Options) error {
	for _, u := range opts.Units {
		logf(opts.Progress, "restarting %s", u)
		if err := runChecked(ctx, opts, system.Command{Path: "systemctl", Args: []string{"restart", u}}); err != nil {
			return err
		}
	}
	return nil
}

// doctorRun is one `banger doctor --system --json`.
type doctorRun struct {
	report doctor.Report
	failed []string
	passed bool
}

func runDoctorOnce(ctx context.Context, opts Options, banger string) (doctorRun, error) {
	cmd := system.Command{Path: banger, Args: []string{"doctor", "--system", "--json"}, Env: opts.env()}
	out, err := runBounded(ctx, opts, cmd)
	if err != nil {
		return doctorRun{}, err
	}
	var d doctorRun
	jsonErr := json.Unmarshal(out.Stdout, &d.report)
	for _, r := range d.report.Results {
		if r.Status == doctor.Fail {
			d.failed = append(d.failed, r.Name)
		}
	}
	switch {
	case out.ExitCode == 0:
		d.passed = true
	case jsonErr != nil:
		return d, fmt.Errorf("`%s` exited %d without a readable report: %s", cmd, out.ExitCode, outputDetail(out))
	}
	return d, nil
}

// baselineFailures are the checks that fail on the current install before
// anything changes. An unreadable baseline counts as "none fail", which
// only makes the later verdict stricter.
func baselineFailures(ctx context.Context, opts Options, banger string) map[string]bool {
	base := map[string]bool{}
	d, err := runDoctorOnce(ctx, opts, banger)
	if err != nil {
		logf(opts.Progress, "could not run doctor on the current install (%v); every failure after the update will count", err)
		return base
	}
	for _, n := range d.failed {
		base[n] = true
	}
	if len(d.failed) > 0 {
		logf(opts.Progress, "doctor already fails on the current install (%s); those checks will not count against %s",
			strings.Join(d.failed, ", "), "the new release")
	}
	return base
}

// verifyWithDoctor runs the newly installed banger's doctor and fails when
// a check fails that did not fail before the update. It retries a few
// times, since a daemon restarted a moment ago may not answer yet; the
// last report goes to Progress when it fails.
func verifyWithDoctor(ctx context.Context, opts Options, banger string, baseline map[string]bool) error {
	var last doctorRun
	var newFails []string
	for attempt := 1; ; attempt++ {
		logf(opts.Progress, "running the new banger doctor (attempt %d of %d)", attempt, opts.DoctorAttempts)
		d, err := runDoctorOnce(ctx, opts, banger)
		if err != nil && ctx.Err() != nil {
			return err
		}
		newFails = newFails[:0]
		if err == nil {
			if d.passed {
				return nil
			}
			for _, n := range d.failed {
				if !baseline[n] {
					newFails = append(newFails, n)
				}
			}
			if len(newFails) == 0 {
				return nil
			}
		}
		last = d
		if attempt >= opts.DoctorAttempts {
			if err != nil {
				return err
			}
			break
		}
		if err := opts.Sleep(ctx, opts.DoctorInterval); err != nil {
			return err
		}
	}
	if opts.Progress != nil {
		_ = last.report.Render(opts.Progress) // progress output; the error below is what counts
	}
	return fmt.Errorf("checks failing on the new install: %s", strings.Join(newFails, ", "))
}

// runChecked runs c and turns a non-zero exit into an error quoting what
// it said.
func runChecked(ctx context.Context, opts Options, c system.Command) error {
	out, err := runBounded(ctx, opts, c)
	if err != nil {
		return err
	}
	if out.ExitCode != 0 {
		return fmt.Errorf("`%s` exited %d: %s", c, out.ExitCode, outputDetail(out))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
