package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types. Part of the wire contract: add, never renumber.
const (
	frameRequest  byte = 1  // host → agent, JSON Request, first frame of a stream
	frameReply    byte = 2  // agent → host, JSON Reply
	frameStdin    byte = 3  // host → agent, process input
	frameStdout   byte = 4  // agent → host
	frameStderr   byte = 5  // agent → host
	frameStdinEOF byte = 6  // host → agent, empty: no more input
	frameSignal   byte = 7  // host → agent, JSON signalMsg
	frameResize   byte = 8  // host → agent, 4 bytes: rows, cols (BE u16)
	frameExit     byte = 9  // agent → host, JSON ExitStatus, last frame of an exec
	frameEntry    byte = 10 // JSON Entry, either direction in a copy
	frameData     byte = 11 // file bytes of the preceding entry
	frameEnd      byte = 12 // JSON endMsg: the copy's entries are complete
	frameAbort    byte = 13 // JSON endMsg with Error: the sender gave up mid-copy
)

// MaxFrame bounds one frame's payload, so a confused or hostile peer cannot
// make either side allocate without limit.
const MaxFrame = 1 << 20

// chunkSize is how much file or process output goes in one data frame:
// large enough that headers cost nothing, small enough to interleave
// stdout, stderr and control frames fairly.
const chunkSize = 64 << 10

const frameHeader = 5

// ErrFrameTooLarge is returned for a frame whose declared length exceeds
// MaxFrame.
var ErrFrameTooLarge = errors.New("frame longer than the protocol allows")

type signalMsg struct {
	Signal string `json:"signal"`
}

type endMsg struct {
	Skipped int    `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// frameReader reads frames from a stream into a reused buffer; the payload
// returned by next is valid until the following call.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, chunkSize+frameHeader)}
}

// next returns the next frame. A stream that ends cleanly between frames
// gives io.EOF; one that ends inside a frame gives io.ErrUnexpectedEOF.
func (fr *frameReader) next() (byte, []byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	if typ == 0 || typ > frameAbort {
		return 0, nil, fmt.Errorf("unknown frame type %d", typ)
	}
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	payload := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, payload, nil
}

// nextJSON reads a frame that must be of type want and decodes it into v.
func (fr *frameReader) nextJSON(want byte, v any) error {
	typ, payload, err := fr.next()
	if err != nil {
		return err
	}
	if typ != want {
		return fmt.Errorf("unexpected frame type %d, want %d", typ, want)
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("malformed frame %q: %w", truncate(payload), err)
	}
	return nil
}

// frameWriter writes whole frames; it is safe for concurrent use, so stdout,
// stderr and control frames never interleave inside each other.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

// write sends one frame as a single Write, so the transport sees whole
// frames and a yamux stream carries each in as few packets as the window
// allows.
func (fw *frameWriter) write(typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(payload))
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	need := frameHeader + len(payload)
	if cap(fw.buf) < need {
		fw.buf = make([]byte, need)
	}
	b := fw.buf[:need]
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[frameHeader:], payload)
	_, err := fw.w.Write(b)
	return err
}

func (fw *frameWriter) writeJSON(typ byte, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fw.write(typ, payload)
}

// readChunks copies r into frames of type typ until r ends. The read buffer
// has room for the header in front, so a chunk goes out without a copy.
func (fw *frameWriter) readChunks(typ byte, r io.Reader, onChunk func(int)) (int64, error) {
	buf := make([]byte, frameHeader+chunkSize)
	var total int64
	for {
		n, err := r.Read(buf[frameHeader:])
		if n > 0 {
			buf[0] = typ
			binary.BigEndian.PutUint32(buf[1:], uint32(n))
			fw.mu.Lock()
			_, werr := fw.w.Write(buf[:frameHeader+n])
			fw.mu.Unlock()
			if werr != nil {
				return total, werr
			}
			total += int64(n)
			if onChunk != nil {
				onChunk(n)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}
