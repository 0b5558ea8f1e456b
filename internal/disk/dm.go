package disk

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/banger-dev/banger/internal/system"
)

// DMTarget is one line of a device-mapper table. Start and Length are in
// 512-byte sectors.
type DMTarget struct {
	Start  int64
	Length int64
	Type   string
	Args   []string
}

// DMRunner creates and removes device-mapper devices. DMSetup is the real
// one; tests use a fake (this host has no device-mapper).
type DMRunner interface {
	// Available says why device-mapper cannot be used here, or nil.
	Available() error
	Create(ctx context.Context, name string, table []DMTarget) error
	Remove(ctx context.Context, name string) error
	// List returns the names of all dm devices, banger's or not.
	List(ctx context.Context) ([]string, error)
}

var (
	dmDevicePattern = regexp.MustCompile(`^/dev/(loop[0-9]+|mapper/banger-[a-z0-9][a-z0-9-]{0,55})$`)
	dmNumberPattern = regexp.MustCompile(`^[0-9]{1,19}$`)
)

// dmTargetArgs says, per target type banger uses, what each argument must
// be: "dev" a loop or banger dm device, "num" a decimal number, or a fixed
// set of words. No other target types are accepted.
var dmTargetArgs = map[string][]string{
	"linear":   {"dev", "num"},
	"zero":     {},
	"snapshot": {"dev", "dev", "P|N", "num"},
}

// ValidateTable checks a table against the narrow set of targets banger
// makes, so no caller can smuggle arbitrary devices or options to dmsetup.
func ValidateTable(table []DMTarget) error {
	if len(table) == 0 {
		return fmt.Errorf("device-mapper table is empty")
	}
	var next int64
	for i, t := range table {
		if t.Start != next || t.Length <= 0 {
			return fmt.Errorf("device-mapper table line %d (start %d, length %d) does not continue the previous line at sector %d", i+1, t.Start, t.Length, next)
		}
		next = t.Start + t.Length
		kinds, ok := dmTargetArgs[t.Type]
		if !ok {
			return fmt.Errorf("device-mapper target %q is not one banger uses", t.Type)
		}
		if len(t.Args) != len(kinds) {
			return fmt.Errorf("device-mapper %s target takes %d arguments, got %d", t.Type, len(kinds), len(t.Args))
		}
		for j, a := range t.Args {
			var ok bool
			switch kinds[j] {
			case "dev":
				ok = dmDevicePattern.MatchString(a)
			case "num":
				ok = dmNumberPattern.MatchString(a)
			default:
				ok = contains(strings.Split(kinds[j], "|"), a)
			}
			if !ok {
				return fmt.Errorf("device-mapper %s target argument %d (%q) is not a valid %s", t.Type, j+1, a, kinds[j])
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// FormatTable renders a table as dmsetup reads it on stdin.
func FormatTable(table []DMTarget) string {
	var b strings.Builder
	for _, t := range table {
		fmt.Fprintf(&b, "%d %d %s", t.Start, t.Length, t.Type)
		for _, a := range t.Args {
			b.WriteString(" " + a)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// DMSetup drives dmsetup through a runner with validated arguments only.
type DMSetup struct {
	Runner system.Runner
	// Control is /dev/mapper/control; its absence means no device-mapper.
	Control string
}

// HostDMSetup is dmsetup on this host.
func HostDMSetup(r system.Runner) DMSetup { return DMSetup{Runner: r, Control: "/dev/mapper/control"} }

// Available implements DMRunner.
func (d DMSetup) Available() error {
	if _, err := os.Stat(d.Control); err != nil {
		return fmt.Errorf("device-mapper is unavailable: %s is missing (load the dm_mod module)", d.Control)
	}
	return nil
}

// Create implements DMRunner.
func (d DMSetup) Create(ctx context.Context, name string, table []DMTarget) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidateTable(table); err != nil {
		return err
	}
	_, err := system.RunChecked(ctx, d.Runner, system.Command{Path: "dmsetup", Args: []string{"create", name},
		Stdin: strings.NewReader(FormatTable(table))})
	if err != nil {
		return fmt.Errorf("create dm device %s: %w", name, err)
	}
	return nil
}

// Remove implements DMRunner. --retry rides out udev briefly holding the
// device open right after it changed.
func (d DMSetup) Remove(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := system.RunChecked(ctx, d.Runner, system.Command{Path: "dmsetup", Args: []string{"remove", "--retry", name}}); err != nil {
		return fmt.Errorf("remove dm device %s: %w", name, err)
	}
	return nil
}

// List implements DMRunner.
func (d DMSetup) List(ctx context.Context) ([]string, error) {
	out, err := system.RunChecked(ctx, d.Runner, system.Command{Path: "dmsetup", Args: []string{"ls"}})
	if err != nil {
		return nil, fmt.Errorf("list dm devices: %w", err)
	}
	return parseDMList(string(out.Stdout)), nil
}

// parseDMList reads `dmsetup ls` output: "name\t(253:0)" lines, or "No
// devices found".
func parseDMList(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[1], "(") {
			names = append(names, f[0])
		}
	}
	return names
}

// COWSize is the size of the sparse copy-on-write file behind a dm
// snapshot of a disk of diskBytes: room for a full rewrite of the disk plus
// dm-snapshot's exception metadata (16 bytes per 4 KiB chunk, plus a
// header). Sparse, the headroom costs nothing until written.
func COWSize(diskBytes int64) int64 { return diskBytes + diskBytes/128 + 8<<20 }
