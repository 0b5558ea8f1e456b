package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestTildeEscape(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string // as separate reads
		sent   string
		ended  bool
	}{
		{"~. first in the session", []string{"~."}, "", true},
		{"~. after CR", []string{"ls\r~."}, "ls\r", true},
		{"~. after LF", []string{"ls\n~.rest"}, "ls\n", true},
		{"~. split across reads", []string{"ls\r~", ".rest"}, "ls\r", true},
		{"~. mid-line is data", []string{"a~.b\r"}, "a~.b\r", false},
		{"~~ sends one ~", []string{"~~.\r"}, "~.\r", false},
		{"~~ then line start again", []string{"~~\r~."}, "~\r", true},
		{"~ before another byte is sent with it", []string{"~x\r"}, "~x\r", false},
		{"~ held over a read boundary", []string{"~", "x"}, "~x", false},
		{"a lone ~ at EOF is sent", []string{"\r~"}, "\r~", false},
		{"^C is a plain byte", []string{"\x03"}, "\x03", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent bytes.Buffer
			ended, err := copyStdinWithEscape(&sent, &chunkReader{chunks: tt.chunks})
			if err != nil {
				t.Fatal(err)
			}
			if sent.String() != tt.sent || ended != tt.ended {
				t.Errorf("sent %q ended %v, want %q %v", sent.String(), ended, tt.sent, tt.ended)
			}
		})
	}
}

// chunkReader returns each chunk from a separate Read, as a terminal does.
type chunkReader struct{ chunks []string }

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

type fakeProcess struct {
	signals []string
	resizes int
	closed  int
}

func (p *fakeProcess) Signal(sig string) error { p.signals = append(p.signals, sig); return nil }
func (p *fakeProcess) Close() error            { p.closed++; return errors.New("closed") }

// TestSecondSignalEndsSession: the first ^C is only passed on; the second
// is passed on too and ends the session with 128+SIGINT.
func TestSecondSignalEndsSession(t *testing.T) {
	for _, tt := range []struct {
		name  string
		sigs  []os.Signal
		ended bool
		code  int
	}{
		{"one ^C is only passed on", []os.Signal{syscall.SIGINT}, false, 0},
		{"window changes do not count", []os.Signal{syscall.SIGINT, syscall.SIGWINCH, syscall.SIGWINCH}, false, 0},
		{"a second ^C ends it", []os.Signal{syscall.SIGINT, syscall.SIGINT}, true, 130},
		{"TERM after INT ends it with TERM's code", []os.Signal{syscall.SIGINT, syscall.SIGTERM}, true, 143},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProcess{}
			end := newSessionEnd(p)
			sigs := make(chan os.Signal, len(tt.sigs))
			for _, s := range tt.sigs {
				sigs <- s
			}
			close(sigs)
			relaySignals(sigs, p, end, "dev", func() { p.resizes++ })
			code, note, ended := end.ended()
			if ended != tt.ended || code != tt.code || p.closed != map[bool]int{true: 1}[tt.ended] {
				t.Fatalf("ended %v code %d closed %d, want %v %d", ended, code, p.closed, tt.ended, tt.code)
			}
			if ended && !strings.Contains(note, `vm "dev"`) {
				t.Errorf("note %q", note)
			}
			if len(p.signals) == 0 || p.signals[0] != "SIGINT" {
				t.Errorf("signals passed on: %v", p.signals)
			}
		})
	}
}
