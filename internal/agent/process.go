package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// Process is the host's handle on a guest process started by exec. It
// works on any stream whose exec request the agent accepted: a yamux
// stream from Client.Open, or the CLI's upgraded connection relayed by the
// daemon. Write, CloseStdin, Signal and Resize may be called while Wait
// runs, from any goroutine.
type Process struct {
	rw        io.ReadWriteCloser
	fw        *frameWriter
	closeOnce sync.Once
	stdinOnce sync.Once
}

// NewProcess wraps an accepted exec stream.
func NewProcess(rw io.ReadWriteCloser) *Process {
	return &Process{rw: rw, fw: newFrameWriter(rw)}
}

// Write sends b to the process's stdin.
func (p *Process) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), chunkSize)
		if err := p.fw.write(frameStdin, b[:n]); err != nil {
			return written, err
		}
		written += n
		b = b[n:]
	}
	return written, nil
}

// CloseStdin tells the process its input has ended (a TTY process gets the
// EOF character). Later calls do nothing.
func (p *Process) CloseStdin() error {
	var err error
	p.stdinOnce.Do(func() { err = p.fw.write(frameStdinEOF, nil) })
	return err
}

// Signal sends a signal ("SIGINT", "TERM", "9") to the process's group.
func (p *Process) Signal(sig string) error {
	if signalNumber(sig) <= 0 {
		return fmt.Errorf("unknown signal %q", sig)
	}
	return p.fw.writeJSON(frameSignal, signalMsg{Signal: sig})
}

// Resize sets a TTY process's window size.
func (p *Process) Resize(rows, cols uint16) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:2], rows)
	binary.BigEndian.PutUint16(b[2:4], cols)
	return p.fw.write(frameResize, b[:])
}

// Wait copies the process's output to stdout and stderr (either may be nil
// to discard) until it exits, and returns how it ended. The stream is
// closed afterwards.
func (p *Process) Wait(stdout, stderr io.Writer) (ExitStatus, error) {
	defer func() { _ = p.Close() }()
	fr := newFrameReader(p.rw)
	for {
		typ, payload, err := fr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ExitStatus{}, fmt.Errorf("the connection to the guest agent broke before the process exited: %w", err)
		}
		switch typ {
		case frameStdout, frameStderr:
			w := stdout
			if typ == frameStderr {
				w = stderr
			}
			if w != nil {
				if _, err := w.Write(payload); err != nil {
					return ExitStatus{}, fmt.Errorf("write process output: %w", err)
				}
			}
		case frameExit:
			var st ExitStatus
			if err := json.Unmarshal(payload, &st); err != nil {
				return ExitStatus{}, fmt.Errorf("malformed exit frame: %w", err)
			}
			return st, nil
		default:
			return ExitStatus{}, fmt.Errorf("unexpected frame type %d from the agent during exec", typ)
		}
	}
}

// Close ends the stream; a process still running is killed by the agent.
func (p *Process) Close() error {
	var err error
	p.closeOnce.Do(func() { err = p.rw.Close() })
	return err
}

// CappedWriter keeps the first Limit bytes written to it and counts all of
// them: the guest decides how much a command writes, and a host caller that
// holds its output (the TUI's exec screen, the MCP server) must not let that
// decide its memory use. Writes never fail, so a long output does not stop
// the command.
type CappedWriter struct {
	Limit int
	buf   []byte
	total int64
}

func (c *CappedWriter) Write(p []byte) (int, error) {
	c.total += int64(len(p))
	if room := c.Limit - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Total is how many bytes were written, kept or not.
func (c *CappedWriter) Total() int64 { return c.total }

// Cut reports whether bytes were dropped.
func (c *CappedWriter) Cut() bool { return c.total > int64(len(c.buf)) }

// Text is what was kept, as valid UTF-8: a cut may split a character, whose
// start is dropped; other invalid bytes become U+FFFD.
func (c *CappedWriter) Text() string {
	b := c.buf
	if c.Cut() {
		for len(b) > 0 && !utf8.Valid(b) && len(c.buf)-len(b) < utf8.UTFMax {
			b = b[:len(b)-1]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
