package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/system"
)

// StatusOptions configures Status. Nil functions skip their part.
type StatusOptions struct {
	Root string
	// Runner runs systemctl and `<binary> --version`.
	Runner system.Runner
	// HelperInfo asks the root helper who it is (privileged.Client.Info).
	HelperInfo func(ctx context.Context) (privileged.HelperInfo, error)
}

// Status is what `banger system status` reports.
type Status struct {
	Installed bool              `json:"installed"`
	Install   *installmeta.Meta `json:"install,omitempty"`
	Units     []UnitStatus      `json:"units"`
	Helper    HelperStatus      `json:"helper"`
	Binaries  []BinaryStatus    `json:"binaries"`
	// Problems are one-line findings a person should act on.
	Problems []string `json:"problems,omitempty"`
}

// UnitStatus is one systemd unit.
type UnitStatus struct {
	Name    string `json:"name"`
	Present bool   `json:"present"`
	Enabled string `json:"enabled,omitempty"`
	Active  string `json:"active,omitempty"`
}

// HelperStatus is the root helper's socket and what answers on it.
type HelperStatus struct {
	Socket    string `json:"socket"`
	Present   bool   `json:"present"`
	Reachable bool   `json:"reachable"`
	OwnerUID  int    `json:"owner_uid,omitempty"`
	Version   string `json:"version,omitempty"`
	// Jailer is the jailer binary the helper launches, if any.
	Jailer string `json:"jailer,omitempty"`
	Error  string `json:"error,omitempty"`
}

// BinaryStatus is one installed binary.
type BinaryStatus struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
	Version string `json:"version,omitempty"`
}

// ReadStatus inspects an install without changing anything.
func ReadStatus(ctx context.Context, opts StatusOptions) (Status, error) {
	t := tree{root: opts.Root}
	l := t.layout()
	var st Status
	meta, err := installmeta.Read(l.InstallMetaPath())
	switch {
	case err == nil:
		st.Installed = true
		st.Install = &meta
	case errors.Is(err, installmeta.ErrNotInstalled):
	default:
		st.Problems = append(st.Problems, err.Error())
	}

	for _, u := range []string{HelperUnit, DaemonUnit} {
		us := UnitStatus{Name: u}
		_, err := os.Stat(t.at(filepath.Join(unitDir, u)))
		us.Present = err == nil
		if opts.Runner != nil && us.Present {
			us.Enabled = systemctlWord(ctx, opts.Runner, "is-enabled", u)
			us.Active = systemctlWord(ctx, opts.Runner, "is-active", u)
			if us.Active != "active" {
				st.Problems = append(st.Problems, fmt.Sprintf("%s is %s: `sudo banger system restart`, then `journalctl -u %s`", u, us.Active, u))
			}
		}
		if st.Installed && !us.Present {
			st.Problems = append(st.Problems, u+" is missing: rerun `sudo banger system install`")
		}
		st.Units = append(st.Units, us)
	}

	st.Helper.Socket = l.HelperSocketPath()
	if fi, err := os.Stat(st.Helper.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		st.Helper.Present = true
	}
	if opts.HelperInfo != nil && st.Helper.Present {
		info, err := opts.HelperInfo(ctx)
		if err != nil {
			st.Helper.Error = err.Error()
			// The client's errors already name the helper ("root helper: …").
			problem := err.Error()
			if !strings.HasPrefix(problem, "root helper") {
				problem = "root helper: " + problem
			}
			st.Problems = append(st.Problems, problem)
		} else {
			st.Helper.Reachable, st.Helper.OwnerUID, st.Helper.Version, st.Helper.Jailer = true, info.OwnerUID, info.Version, info.Jailer
			if st.Installed && info.OwnerUID != meta.OwnerUID {
				st.Problems = append(st.Problems, fmt.Sprintf("the root helper serves uid %d but the install owner is uid %d: `sudo banger system restart`", info.OwnerUID, meta.OwnerUID))
			}
		}
	} else if st.Installed && !st.Helper.Present {
		st.Problems = append(st.Problems, "the root helper's socket "+st.Helper.Socket+" is missing: `sudo banger system restart`")
	}

	for _, b := range []string{BangerPath, BangerdPath, AgentPath} {
		bs := BinaryStatus{Path: t.at(b)}
		if err := checkExecutable(bs.Path); err == nil {
			bs.Present = true
			if opts.Runner != nil && b != AgentPath {
				bs.Version = versionLine(ctx, opts.Runner, bs.Path)
			}
		} else if st.Installed {
			st.Problems = append(st.Problems, bs.Path+" is missing: rerun `sudo banger system install` from a build")
		}
		st.Binaries = append(st.Binaries, bs)
	}
	return st, nil
}

// systemctlWord runs `systemctl VERB UNIT` and returns its one-word answer
// (is-active and is-enabled print a state and exit non-zero for most).
func systemctlWord(ctx context.Context, r system.Runner, verb, unit string) string {
	out, err := r.Run(ctx, system.Command{Path: "systemctl", Args: []string{verb, unit}})
	if err != nil {
		return "unknown"
	}
	w := strings.TrimSpace(string(out.Stdout))
	if w == "" {
		return "unknown"
	}
	return w
}

func versionLine(ctx context.Context, r system.Runner, bin string) string {
	out, err := r.Run(ctx, system.Command{Path: bin, Args: []string{"--version"}})
	if err != nil || out.ExitCode != 0 {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out.Stdout)), "\n")
	return line
}

// Render writes st as short aligned text.
func (st Status) Render(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if st.Install != nil {
		m := st.Install
		_, _ = fmt.Fprintf(tw, "installed\t%s\n", m.Build().Line("banger"))
		_, _ = fmt.Fprintf(tw, "owner\t%s (uid %d, gid %d)\n", m.OwnerUser, m.OwnerUID, m.OwnerGID)
		_, _ = fmt.Fprintf(tw, "installed at\t%s\n", m.InstalledAt.Format("2006-01-02 15:04:05Z07:00"))
	} else {
		_, _ = fmt.Fprintf(tw, "installed\tno (user mode); `sudo banger system install --owner $USER`\n")
	}
	for _, u := range st.Units {
		state := "missing"
		if u.Present {
			state = "present"
			if u.Active != "" {
				state = u.Active + ", " + u.Enabled
			}
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", u.Name, state)
	}
	h := "missing"
	switch {
	case st.Helper.Reachable:
		h = fmt.Sprintf("answering, serves uid %d, %s", st.Helper.OwnerUID, st.Helper.Version)
		if st.Helper.Jailer != "" {
			h += ", launches " + st.Helper.Jailer
		}
	case st.Helper.Error != "":
		h = "not answering: " + st.Helper.Error
	case st.Helper.Present:
		h = "present"
	}
	_, _ = fmt.Fprintf(tw, "helper socket\t%s: %s\n", st.Helper.Socket, h)
	for _, b := range st.Binaries {
		v := "missing"
		if b.Present {
			v = "present"
			if b.Version != "" {
				v = b.Version
			}
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", b.Path, v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range st.Problems {
		if _, err := fmt.Fprintf(w, "problem: %s\n", p); err != nil {
			return err
		}
	}
	return nil
}
