package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/system"
)

// ErrIncompatibleSchema: the staged bangerd says the state database was
// written by a newer banger than the release (exit 2 of
// `bangerd --check-migrations`). Swapping would leave a daemon that refuses
// to open its own state.
var ErrIncompatibleSchema = errors.New("the new bangerd cannot open the current state database")

// CheckStagedSchema runs the staged `bangerd --check-migrations --system`
// and returns its one-line verdict. Exit 0 (compatible) and 1 (migrations
// pending, applied on first open) let the update go on; exit 2 is
// ErrIncompatibleSchema; anything else is an error naming the output.
// env is added to the command's environment (BANGER_SYSTEM_ROOT in tests).
func CheckStagedSchema(ctx context.Context, r system.Runner, bangerd string, env []string) (string, error) {
	cmd := system.Command{Path: bangerd, Args: []string{"--check-migrations", "--system"}, Env: env}
	out, err := r.Run(ctx, cmd)
	if err != nil {
		return "", fmt.Errorf("check the state database with the new bangerd: %w", err)
	}
	line := firstLine(out.Stdout)
	switch out.ExitCode {
	case 0, 1:
		return line, nil
	case 2:
		detail := line
		if detail == "" {
			detail = firstLine(out.Stderr)
		}
		return line, fmt.Errorf("%w (%s): the database was written by a newer banger, so this release is older than your data; "+
			"install a release at least as new as the one that wrote it", ErrIncompatibleSchema, detail)
	}
	return line, fmt.Errorf("check the state database with the new bangerd: `%s` exited %d: %s",
		cmd, out.ExitCode, strings.TrimSpace(string(out.Stderr)+" "+string(out.Stdout)))
}

// StagedBuild asks the staged banger for its build stamp
// (`banger version --json`), which is what install.toml records and what
// must match the version the manifest promised.
func StagedBuild(ctx context.Context, r system.Runner, banger string) (buildinfo.Info, error) {
	cmd := system.Command{Path: banger, Args: []string{"version", "--json"}}
	out, err := r.Run(ctx, cmd)
	if err != nil {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: %w", err)
	}
	if out.ExitCode != 0 {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: `%s` exited %d: %s", cmd, out.ExitCode, firstLine(out.Stderr))
	}
	var info buildinfo.Info
	dec := json.NewDecoder(bytes.NewReader(out.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil || info.Version == "" {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: unreadable answer %q", firstLine(out.Stdout))
	}
	return info, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
