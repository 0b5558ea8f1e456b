// Package agenttest is a hostile guest agent: a stand-in for
// banger-vsock-agent that says what a compromised guest would say, for tests
// of the host side ("the guest is untrusted").
//
// It speaks the real session hello and then either
//
//   - serves a yamux session like the agent (health, guest_info,
//     authorize_key and identity — claimed done, as guest setup needs — and
//     get; other ops are refused as unknown) with lies chosen by a
//     Behaviour: arbitrary version and hostname strings, any "host keys"
//     from identity, a get tree with any modes, owners and declared sizes,
//     or a get that stalls mid-file; or
//   - when PingFlood or GuestStreams is set, writes raw yamux frames instead
//     (a ping flood, streams opened by the guest with data the host never
//     asked for, then 192 KiB of no-op frames so a test that sees the host
//     has read everything knows the flood went through its frame handling)
//     and then holds the connection open without reading.
//
// Use it in process (Behaviour.ServeConn on one end of a socket pair, the
// host's agent.NewClient on the other) or as a binary the fake Firecracker
// hosts in place of the real agent: build ./test/hostileagent and point
// BANGER_FAKE_GUEST at it, with the Behaviour as JSON in
// BANGER_HOSTILE_AGENT.
//
// The frame encoding is restated here on purpose rather than borrowed from
// package agent: a stand-in that used the host's own encoder could not send
// what the encoder would not.
package agenttest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/hashicorp/yamux"

	"github.com/banger-dev/banger/internal/agent"
)

// EnvBehaviour names the environment variable the hostileagent binary reads
// its Behaviour from (JSON).
const EnvBehaviour = "BANGER_HOSTILE_AGENT"

// Behaviour is what the hostile agent does. The zero value is a well-behaved
// agent with an empty version, answering health and nothing useful else.
type Behaviour struct {
	// Version and Hostname are returned verbatim in health and guest_info
	// answers (escape sequences, newlines, megabytes: anything).
	Version  string `json:"version,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Tree is what every get sends, whatever path was asked for. The first
	// entry is the root (Path "").
	Tree []File `json:"tree,omitempty"`
	// StallAfter, when positive, stops a get after that many bytes of file
	// data and keeps the stream open, sending nothing more.
	StallAfter int64 `json:"stall_after,omitempty"`
	// PingFlood sends this many yamux pings right after the hello and never
	// reads the answers.
	PingFlood int `json:"ping_flood,omitempty"`
	// GuestStreams opens this many streams from the guest, each followed by
	// GuestStreamData bytes of data the host never asked for.
	GuestStreams    int `json:"guest_streams,omitempty"`
	GuestStreamData int `json:"guest_stream_data,omitempty"`
	// IdentityHostKeys are the "new SSH host keys" an identity op claims
	// (it reports success without doing anything).
	IdentityHostKeys []string `json:"identity_host_keys,omitempty"`
}

// File is one entry of a hostile get.
type File struct {
	Path string `json:"path"`
	// Type is agent.EntryFile (default), agent.EntryDir or agent.EntrySymlink.
	Type string `json:"type,omitempty"`
	// Mode is sent as is: setuid, setgid, sticky and 0777 included.
	Mode uint32 `json:"mode"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Link string `json:"link,omitempty"`
	Data []byte `json:"data,omitempty"`
	// Size is the declared size; 0 means len(Data). A declared size larger
	// than Data is padded with zeros, so huge files cost the test nothing.
	Size int64 `json:"size,omitempty"`
}

// Wire constants of banger's agent protocol (internal/agent/frame.go,
// session.go) and of yamux (its spec.md).
const (
	frameRequest = 1
	frameReply   = 2
	frameEntry   = 10
	frameData    = 11
	frameEnd     = 12

	helloPrefix = "BANGER-AGENT/1 "

	muxHeaderSize = 12
	muxData       = 0
	muxWindow     = 1
	muxPing       = 2
	muxSYN        = 1
)

// ServeConn runs one session on conn until ctx ends or the host goes away,
// then closes conn.
func (b Behaviour) ServeConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	r, err := acceptHello(conn)
	if err != nil {
		return err
	}
	if b.PingFlood > 0 || b.GuestStreams > 0 {
		if _, err := conn.Write(b.rawFrames()); err != nil {
			return fmt.Errorf("send raw frames: %w", err)
		}
		<-ctx.Done()
		return nil
	}
	sess, err := yamux.Server(struct {
		io.Reader
		io.WriteCloser
	}{r, conn}, quietYamux())
	if err != nil {
		return err
	}
	defer sess.Close()
	for {
		stream, err := sess.AcceptStream()
		if err != nil {
			return nil
		}
		go b.serveStream(ctx, stream)
	}
}

// Serve runs ServeConn for every connection on ln until ctx ends.
func (b Behaviour) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() { _ = b.ServeConn(ctx, conn) }()
	}
}

func quietYamux() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	return cfg
}

// acceptHello answers the host's hello line and returns the reader past it.
func acceptHello(conn net.Conn) (io.Reader, error) {
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	nonce, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), helloPrefix+"HELLO ")
	if !ok {
		return nil, fmt.Errorf("not a hello: %q", line)
	}
	if _, err := io.WriteString(conn, helloPrefix+"READY "+nonce+"\n"); err != nil {
		return nil, err
	}
	return br, nil
}

// trailerFrames is how many no-op frames end a raw flood: 192 KiB.
const trailerFrames = 192 << 10 / muxHeaderSize

// rawFrames is the flood: pings, then guest-opened streams with data, then
// a trailer of no-ops.
func (b Behaviour) rawFrames() []byte {
	var buf bytes.Buffer
	for i := range b.PingFlood {
		buf.Write(muxHeader(muxPing, muxSYN, 0, uint32(i)))
	}
	data := make([]byte, b.GuestStreamData)
	for i := range b.GuestStreams {
		id := uint32(2 * (i + 1)) // the yamux server's (guest's) stream IDs are even
		buf.Write(muxHeader(muxWindow, muxSYN, id, 0))
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 64<<10)
			buf.Write(muxHeader(muxData, 0, id, uint32(n)))
			buf.Write(rest[:n])
			rest = rest[n:]
		}
	}
	// No-ops a host ignores (window updates for a stream it never opened),
	// more than it buffers: once it has read all of them, it has dealt with
	// everything before them.
	for range trailerFrames {
		buf.Write(muxHeader(muxWindow, 0, 1, 0))
	}
	return buf.Bytes()
}

// FloodBytes is how many bytes the raw flood of b is: a test that has seen
// the host read that many knows the host has handled the whole flood.
func (b Behaviour) FloodBytes() int64 {
	if b.PingFlood == 0 && b.GuestStreams == 0 {
		return 0
	}
	chunks := int64(b.GuestStreamData+64<<10-1) / (64 << 10)
	perStream := muxHeaderSize*(1+chunks) + int64(b.GuestStreamData)
	return muxHeaderSize*int64(b.PingFlood) + int64(b.GuestStreams)*perStream + muxHeaderSize*trailerFrames
}

func muxHeader(typ byte, flags uint16, id, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:4], flags)
	binary.BigEndian.PutUint32(h[4:8], id)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

func (b Behaviour) serveStream(ctx context.Context, stream net.Conn) {
	defer stream.Close()
	var req agent.Request
	if err := readFrame(stream, frameRequest, &req); err != nil {
		return
	}
	switch req.Op {
	case agent.OpHealth:
		_ = writeJSON(stream, frameReply, agent.Reply{OK: true, Health: &agent.HealthInfo{AgentVersion: b.Version, Hostname: b.Hostname}})
	case agent.OpGuestInfo:
		_ = writeJSON(stream, frameReply, agent.Reply{OK: true, Guest: &agent.GuestInfo{AgentVersion: b.Version, Hostname: b.Hostname}})
	case agent.OpAuthorizeKey:
		// Claims success: guest setup after boot needs it.
		res := agent.AuthorizeKeyResult{Added: true}
		if req.AuthorizeKey != nil {
			res.User, res.Home = req.AuthorizeKey.User, "/home/"+req.AuthorizeKey.User
		}
		_ = writeJSON(stream, frameReply, agent.Reply{OK: true, AuthorizeKey: &res})
	case agent.OpIdentity:
		res := agent.IdentityResult{Hostname: b.Hostname, HostKeys: b.IdentityHostKeys}
		_ = writeJSON(stream, frameReply, agent.Reply{OK: true, Identity: &res})
	case agent.OpGet:
		if err := writeJSON(stream, frameReply, agent.Reply{OK: true}); err != nil {
			return
		}
		_ = b.SendTree(ctx, stream)
	default:
		_ = writeJSON(stream, frameReply, agent.Reply{Code: agent.CodeUnknownOp, Error: "the hostile agent does not do " + req.Op})
	}
}

// errStalled ends a send that stalls on purpose.
var errStalled = errors.New("stalled on purpose")

// SendTree writes the copy stream of a get (entries, data, end) for Tree on
// w, stalling as StallAfter says until ctx ends. Tests can use it alone, to
// feed agent.ReceiveGet directly.
func (b Behaviour) SendTree(ctx context.Context, w io.Writer) error {
	sent := int64(0)
	for _, f := range b.Tree {
		e := agent.Entry{Path: f.Path, Type: f.Type, Mode: f.Mode, UID: f.UID, GID: f.GID, Link: f.Link}
		if e.Type == "" {
			e.Type = agent.EntryFile
		}
		if e.Type == agent.EntryFile {
			e.Size = max(f.Size, int64(len(f.Data)))
		}
		if err := writeJSON(w, frameEntry, e); err != nil {
			return err
		}
		for left := e.Size; left > 0; {
			chunk := make([]byte, min(left, 64<<10))
			copy(chunk, f.Data[min(int64(len(f.Data)), e.Size-left):])
			if b.StallAfter > 0 && sent+int64(len(chunk)) > b.StallAfter {
				chunk = chunk[:b.StallAfter-sent]
				if len(chunk) > 0 {
					if err := writeFrame(w, frameData, chunk); err != nil {
						return err
					}
				}
				<-ctx.Done()
				return errStalled
			}
			if err := writeFrame(w, frameData, chunk); err != nil {
				return err
			}
			sent += int64(len(chunk))
			left -= int64(len(chunk))
		}
	}
	return writeJSON(w, frameEnd, struct{}{})
}

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	hdr := make([]byte, 5, 5+len(payload))
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	_, err := w.Write(append(hdr, payload...))
	return err
}

func writeJSON(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFrame(w, typ, b)
}

func readFrame(r io.Reader, want byte, v any) error {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != want {
		return fmt.Errorf("frame type %d, want %d", hdr[0], want)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > agent.MaxFrame {
		return agent.ErrFrameTooLarge
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return err
	}
	return json.Unmarshal(payload, v)
}
