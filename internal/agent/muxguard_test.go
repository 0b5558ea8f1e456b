package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
)

func muxFrame(typ byte, flags uint16, id, length uint32, body []byte) []byte {
	h := make([]byte, muxHeaderSize, muxHeaderSize+len(body))
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:4], flags)
	binary.BigEndian.PutUint32(h[4:8], id)
	binary.BigEndian.PutUint32(h[8:12], length)
	return append(h, body...)
}

// TestMuxGuardFilters checks frame by frame what the guard hands yamux: one
// guest ping until its answer is written, nothing of a guest-opened stream,
// everything else untouched.
func TestMuxGuardFilters(t *testing.T) {
	ping := func(id uint32) []byte { return muxFrame(muxTypePing, muxFlagSYN, 0, id, nil) }
	hostData := muxFrame(muxTypeData, 0, 1, 3, []byte("abc"))
	var in bytes.Buffer
	for _, f := range [][]byte{
		ping(1), ping(2), // the second arrives while the first is unanswered
		muxFrame(muxTypeWindowUpdate, muxFlagSYN, 2, 0, nil), // the guest opens stream 2
		muxFrame(muxTypeData, 0, 2, 5, []byte("hello")),
		hostData,
	} {
		in.Write(f)
	}
	var out bytes.Buffer
	g := newMuxGuard(&in, &out, io.NopCloser(nil))
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return g.Read(p[:min(len(p), 5)]) }))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(ping(1), hostData...); !bytes.Equal(got, want) {
		t.Fatalf("guard passed\n%x\nwant\n%x", got, want)
	}

	// yamux answers ping 1, split across writes and after a data frame; the
	// next ping may then pass.
	answer := append(muxFrame(muxTypeData, 0, 1, 2, []byte("xy")), muxFrame(muxTypePing, muxFlagACK, 0, 1, nil)...)
	for _, b := range answer {
		if _, err := g.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out.Bytes(), answer) {
		t.Fatalf("guard wrote %x, want %x", out.Bytes(), answer)
	}
	in.Write(ping(3))
	got, err = io.ReadAll(g)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ping(3)) {
		t.Fatalf("after the answer, guard passed %x, want ping 3", got)
	}
}

// TestMuxGuardKeepsAgentKeepalives runs the agent's own yamux session
// against a host client: its pings, one at a time, are all answered.
func TestMuxGuardKeepsAgentKeepalives(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	t.Cleanup(func() { hostEnd.Close(); guestEnd.Close() })
	sessions := make(chan *yamux.Session, 1)
	go func() {
		r, err := serverHelloSocket(guestEnd)
		if err != nil {
			t.Error(err)
			close(sessions)
			return
		}
		sess, err := yamux.Server(readWriteCloser{Reader: r, Writer: guestEnd, Closer: guestEnd}, yamuxConfig(nil))
		if err != nil {
			t.Error(err)
		}
		sessions <- sess
	}()
	c, err := NewClient(testCtx(t), hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sess := <-sessions
	if sess == nil {
		t.FailNow()
	}
	for i := range 5 {
		if _, err := sess.Ping(); err != nil {
			t.Fatalf("agent ping %d: %v", i, err)
		}
	}
}
