package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/system"
)

// ErrIncompatibleSchema: the staged bangerd says the state database was
// written by a newer banger than the release (exit 2 of
// `bangerd --check-migrations`). Swapping would leave a daemon that refuses
// to open its own state.
var ErrIncompatibleSchema = errors.New("the new bangerd cannot open the current state database")

// checkStagedSchema runs the staged `bangerd --check-migrations --system`
// and returns its one-line verdict. Exit 0 (compatible) and 1 (migrations
// pending, applied on first open) let the update go on; exit 2 is
// ErrIncompatibleSchema; anything else is an error quoting the output.
func checkStagedSchema(ctx context.Context, opts Options, bangerd string) (string, error) {
	cmd := system.Command{Path: bangerd, Args: []string{"--check-migrations", "--system"}, Env: opts.env()}
	out, err := runBounded(ctx, opts, cmd)
	if err != nil {
		return "", fmt.Errorf("check the state database with the new bangerd: %w", err)
	}
	line := quoteOutput(out.Stdout)
	switch out.ExitCode {
	case 0, 1:
		return line, nil
	case 2:
		detail := line
		if detail == "" {
			detail = quoteOutput(out.Stderr)
		}
		return line, fmt.Errorf("%w (%s): the database was written by a newer banger, so this release is older than your data; "+
			"install a release at least as new as the one that wrote it", ErrIncompatibleSchema, detail)
	}
	return line, fmt.Errorf("check the state database with the new bangerd: `%s` exited %d: %s", cmd, out.ExitCode, outputDetail(out))
}

// stagedBuild asks the staged banger for its build stamp
// (`banger version --json`), which is what install.toml records and what
// must match the version the manifest promised.
func stagedBuild(ctx context.Context, opts Options, banger string) (buildinfo.Info, error) {
	cmd := system.Command{Path: banger, Args: []string{"version", "--json"}}
	out, err := runBounded(ctx, opts, cmd)
	if err != nil {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: %w", err)
	}
	if out.ExitCode != 0 {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: `%s` exited %d: %s", cmd, out.ExitCode, outputDetail(out))
	}
	var info buildinfo.Info
	dec := json.NewDecoder(bytes.NewReader(out.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil || info.Version == "" {
		return buildinfo.Info{}, fmt.Errorf("ask the new banger for its version: unreadable answer \"%s\"", quoteOutput(out.Stdout))
	}
	return info, nil
}

// outputDetail quotes what a failed command said: its stderr, or its
// stdout when stderr is empty.
func outputDetail(out system.Output) string {
	if msg := quoteOutput(out.Stderr); msg != "" {
		return msg
	}
	return quoteOutput(out.Stdout)
}
