package agent

import (
	"bufio"
	"encoding/binary"
	"io"
	"sync/atomic"
)

// yamux wire format (github.com/hashicorp/yamux spec.md): a 12-byte header
// — version, type, flags (BE u16), stream ID (BE u32), length (BE u32) —
// followed, for data frames only, by length bytes of payload.
const (
	muxHeaderSize       = 12
	muxTypeData         = 0
	muxTypeWindowUpdate = 1
	muxTypePing         = 2
	muxFlagSYN          = 1
	muxFlagACK          = 2
)

// muxGuard sits between the host's yamux session and the guest, because
// everything the guest sends is untrusted and yamux v0.1.2 trusts its peer
// in two ways that cost the host memory:
//
//   - it answers every ping in a goroutine of its own, so a guest that
//     floods pings and does not read the answers piles up goroutines
//     (1.5 M pings took bangerd from 22 MB to 3.3 GB);
//   - it queues every stream the peer opens (up to its accept backlog, each
//     with a receive window's worth of buffered data), although the host
//     never accepts a stream.
//
// The guard parses the guest's frames before yamux does. It lets at most one
// guest ping through until yamux's answer has been written (seen on the way
// out), dropping the rest, which a real agent never sends: its keepalive
// waits for each answer before pinging again. It drops every frame of a
// stream the guest opened (even IDs; the host, the yamux client, uses odd
// ones), data included, so such a stream costs the host nothing and the
// guest's open simply times out on its side.
type muxGuard struct {
	in  *bufio.Reader
	out io.Writer
	io.Closer

	// pingInFlight is 1 from passing a guest ping to yamux until yamux's
	// answer goes out.
	pingInFlight atomic.Int32

	// Read side (yamux's receive loop is its only reader).
	hdr     [muxHeaderSize]byte
	hdrLeft []byte // part of a passed header not yet returned
	body    int64  // payload bytes of the current passed frame left to return

	// Write side (yamux's send loop is its only writer).
	outHdr  [muxHeaderSize]byte
	outHdrN int
	outBody int64
}

func newMuxGuard(r io.Reader, w io.Writer, c io.Closer) *muxGuard {
	return &muxGuard{in: bufio.NewReaderSize(r, 64<<10), out: w, Closer: c}
}

// Read returns the guest's frames that yamux may see.
func (g *muxGuard) Read(p []byte) (int, error) {
	for {
		if len(g.hdrLeft) > 0 {
			n := copy(p, g.hdrLeft)
			g.hdrLeft = g.hdrLeft[n:]
			return n, nil
		}
		if g.body > 0 {
			if int64(len(p)) > g.body {
				p = p[:g.body]
			}
			n, err := g.in.Read(p)
			g.body -= int64(n)
			return n, err
		}
		if _, err := io.ReadFull(g.in, g.hdr[:]); err != nil {
			return 0, err
		}
		pass, body := g.admit(g.hdr)
		if !pass {
			if _, err := g.in.Discard(int(body)); err != nil {
				return 0, err
			}
			continue
		}
		g.hdrLeft, g.body = g.hdr[:], body
	}
}

// admit decides whether yamux sees a frame with header h, and how many
// payload bytes follow it.
func (g *muxGuard) admit(h [muxHeaderSize]byte) (pass bool, body int64) {
	if h[0] != 0 {
		// Not a yamux frame yamux accepts: let it fail the session.
		return true, 0
	}
	typ := h[1]
	flags := binary.BigEndian.Uint16(h[2:4])
	id := binary.BigEndian.Uint32(h[4:8])
	length := binary.BigEndian.Uint32(h[8:12])
	if typ == muxTypeData {
		body = int64(length)
	}
	switch {
	case (typ == muxTypeData || typ == muxTypeWindowUpdate) && id != 0 && id%2 == 0:
		return false, body
	case typ == muxTypePing && flags&muxFlagSYN != 0:
		return g.pingInFlight.CompareAndSwap(0, 1), body
	}
	return true, body
}

// Write sends yamux's frames to the guest, watching for the answer to a
// guest ping so the next one may pass. It looks before writing: once the
// answer is out the guest may ping again at once, and that ping must find
// the way open. (A failed write ends the session, so tracking past it does
// not matter.)
func (g *muxGuard) Write(p []byte) (int, error) {
	g.observe(p)
	return g.out.Write(p)
}

// observe tracks frame boundaries in what was written.
func (g *muxGuard) observe(b []byte) {
	for len(b) > 0 {
		if g.outBody > 0 {
			k := min(int64(len(b)), g.outBody)
			g.outBody -= k
			b = b[k:]
			continue
		}
		k := copy(g.outHdr[g.outHdrN:], b)
		g.outHdrN += k
		b = b[k:]
		if g.outHdrN < muxHeaderSize {
			return
		}
		g.outHdrN = 0
		typ := g.outHdr[1]
		flags := binary.BigEndian.Uint16(g.outHdr[2:4])
		switch {
		case typ == muxTypeData:
			g.outBody = int64(binary.BigEndian.Uint32(g.outHdr[8:12]))
		case typ == muxTypePing && flags&muxFlagACK != 0:
			g.pingInFlight.Store(0)
		}
	}
}
