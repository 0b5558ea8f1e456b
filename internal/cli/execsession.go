package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// How a user gets out of `vm exec` when the guest will not let go: a second
// terminating signal without -t, or ~. at the start of a line with -t. The
// exec stream is closed, which makes the agent kill the command.

// escapeExitCode is what `vm exec -t` exits with after ~., as ssh does.
const escapeExitCode = 255

// sessionEnd ends an exec session from banger's side, once, and remembers
// the exit code and the note to print for it.
type sessionEnd struct {
	once   sync.Once
	stream io.Closer
	done   chan struct{}
	code   int
	note   string
}

func newSessionEnd(stream io.Closer) *sessionEnd {
	return &sessionEnd{stream: stream, done: make(chan struct{})}
}

// end closes the stream; the first call's code and note win.
func (e *sessionEnd) end(code int, note string) {
	e.once.Do(func() {
		e.code, e.note = code, note
		close(e.done)
		_ = e.stream.Close()
	})
}

// ended reports whether end was called, with its code and note.
func (e *sessionEnd) ended() (int, string, bool) {
	select {
	case <-e.done:
		return e.code, e.note, true
	default:
		return 0, "", false
	}
}

// signalTarget is the part of an exec process that takes signals.
type signalTarget interface {
	Signal(sig string) error
}

// relaySignals passes signals on to the process until sigs is closed. A
// second terminating signal means the user has given up on a command that
// ignores them: the session ends with 128+N, as a shell reports signal N.
// resize is called for SIGWINCH.
func relaySignals(sigs <-chan os.Signal, p signalTarget, end *sessionEnd, vm string, resize func()) {
	terminating := 0
	for sig := range sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		if s == syscall.SIGWINCH {
			resize()
			continue
		}
		_ = p.Signal(unix.SignalName(s))
		if terminating++; terminating == 2 {
			end.end(128+int(s), fmt.Sprintf("banger: second %s: stopped waiting for the command in vm %q and ended its session (which kills it)", unix.SignalName(s), vm))
		}
	}
}

// tildeEscape finds ssh's "~." in what the user types into a -t session:
// a ~ right after a newline or carriage return (or first in the session)
// starts an escape; "~." ends the session, "~~" sends one ~, and a ~ before
// anything else is sent with it. The zero value is at the start of a line.
type tildeEscape struct {
	midLine bool // a byte other than CR/LF was the last one sent
	tilde   bool // a line-start ~ is held back, waiting for the next byte
}

// filter returns the bytes of in to send on, and whether ~. was typed (the
// bytes before it are still returned).
func (t *tildeEscape) filter(in []byte) ([]byte, bool) {
	out := make([]byte, 0, len(in)+1)
	for _, b := range in {
		if t.tilde {
			t.tilde = false
			switch b {
			case '.':
				return out, true
			case '~':
				out = append(out, '~')
				t.midLine = true
				continue
			}
			out = append(out, '~')
		}
		if !t.midLine && b == '~' {
			t.tilde = true
			continue
		}
		out = append(out, b)
		t.midLine = b != '\r' && b != '\n'
	}
	return out, false
}

// stdinTarget is the part of an exec process that takes its input.
type stdinTarget interface {
	io.Writer
	CloseStdin() error
}

// pumpStdin sends stdin (which may be nil) to the process, then its end.
// With tildeEscapes (only for a person typing into a -t session: piped
// input is data) ~. calls escaped instead, and nothing more is sent.
func pumpStdin(p stdinTarget, stdin io.Reader, tildeEscapes bool, escaped func()) {
	switch {
	case stdin == nil:
	case tildeEscapes:
		if ended, _ := copyStdinWithEscape(p, stdin); ended {
			escaped()
			return
		}
	default:
		_, _ = io.Copy(p, stdin)
	}
	_ = p.CloseStdin()
}

// copyStdinWithEscape copies src to dst until EOF or ~., and reports
// whether ~. ended it (the bytes typed before it are sent).
func copyStdinWithEscape(dst io.Writer, src io.Reader) (bool, error) {
	var t tildeEscape
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			out, escaped := t.filter(buf[:n])
			if len(out) > 0 {
				if _, werr := dst.Write(out); werr != nil {
					return false, werr
				}
			}
			if escaped {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			if t.tilde { // a ~ held back at the very end was just a ~
				_, werr := dst.Write([]byte{'~'})
				return false, werr
			}
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}
