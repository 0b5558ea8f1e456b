package updater

import (
	"bytes"
	"context"
	"fmt"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/termtext"
)

// maxQuoted bounds how much of a command's output an error quotes.
const maxQuoted = 200

// runBounded is the one place the update runs a program: the staged
// binaries (which are not trusted until they pass these checks), systemctl
// and doctor. Each run is bounded by opts.CommandTimeout (Command.Timeout).
// The runner (system.ExecRunner in production) runs the program in its own
// process group, kills the group when the timeout ends it, bounds the wait
// for a child holding its output and keeps only the start of a flood of
// output (system.DefaultMaxOutput of each stream); here a run that printed
// more than was kept becomes an error saying so, since its answer cannot be
// trusted whole.
func runBounded(ctx context.Context, opts Options, c system.Command) (system.Output, error) {
	c.Timeout = opts.CommandTimeout
	out, err := opts.Runner.Run(ctx, c)
	switch {
	case err != nil:
		return out, err
	case out.Dropped > 0:
		return out, fmt.Errorf("`%s` printed more output than is kept (%d bytes dropped); its answer is not trusted", c, out.Dropped)
	}
	return out, nil
}

// quoteOutput renders the first non-empty line of a program's output for
// an error or progress line: at most maxQuoted characters, with every
// character a terminal would act on escaped (termtext.Line), so a hostile
// binary can neither flood the terminal nor write escape sequences to it.
func quoteOutput(b []byte) string {
	line := bytes.TrimSpace(b)
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = bytes.TrimSpace(line[:i])
	}
	// maxQuoted runes take at most 4 bytes each: no need to look further.
	if len(line) > 4*maxQuoted+1 {
		line = line[:4*maxQuoted+1]
	}
	return termtext.Short(string(line), maxQuoted)
}
