package privileged

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The helper's bounds on what one caller can make it hold: bytes, passed
// descriptors, connections and time. Each test fails if its bound is
// removed.

// The flood child: the test binary, re-run as a stranger, opens conns
// connections to the socket, passes fds descriptors on each (one message,
// never finishing the request), then reads every reply.
const (
	childFloodEnv       = "BANGER_PRIVTEST_FLOOD" // "conns:fds"
	childFloodSocketEnv = "BANGER_PRIVTEST_FLOOD_SOCKET"
)

// floodReport is what the flood child prints.
type floodReport struct {
	UID int `json:"uid"`
	// Replied counts connections answered (a refusal), Closed those closed
	// without an answer.
	Replied int `json:"replied"`
	Closed  int `json:"closed"`
	// SlowestMillis is the longest a connection stayed open.
	SlowestMillis int64  `json:"slowest_ms"`
	Error         string `json:"error,omitempty"`
}

func childFlood(sock, spec string) int {
	var conns, fds int
	rep := floodReport{UID: os.Getuid()}
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(rep) }()
	if _, err := fmt.Sscanf(spec, "%d:%d", &conns, &fds); err != nil {
		rep.Error = err.Error()
		return 0
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		rep.Error = err.Error()
		return 0
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		rep.Error = err.Error()
		return 0
	}
	rights := make([]int, fds)
	for i := range rights {
		rights[i] = int(null.Fd())
	}
	start := time.Now()
	var open []*net.UnixConn
	for range conns {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			rep.Error = err.Error()
			return 0
		}
		if fds > 0 {
			// A refused or closed connection may fail the write: fine.
			_, _, _ = c.WriteMsgUnix([]byte(`{"op":"helper.info"`), unix.UnixRights(rights...), nil)
		}
		open = append(open, c)
	}
	for _, c := range open {
		_ = c.SetReadDeadline(time.Now().Add(40 * time.Second))
		b, _ := io.ReadAll(c)
		if len(b) > 0 {
			rep.Replied++
		} else {
			rep.Closed++
		}
		rep.SlowestMillis = max(rep.SlowestMillis, time.Since(start).Milliseconds())
		_ = c.Close()
	}
	return 0
}

// countFDs is how many descriptors this process (the helper, in these
// tests) has open.
func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(entries)
}

// flood runs the flood child as nobody against sock and returns its report
// and how far the helper's descriptor count rose above where it was just
// before the flood, sampled until the child finished.
func flood(t *testing.T, sock string, conns, fds int) (floodReport, int) {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d", childFloodEnv, conns, fds), childFloodSocketEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("flood child: %q, %v\n%s", line, err, stderr.String())
	}
	baseline := countFDs(t)
	done := make(chan floodReport, 1)
	go func() {
		var rep floodReport
		if err := json.NewDecoder(out).Decode(&rep); err != nil {
			rep.Error = "decode report: " + err.Error()
		}
		done <- rep
	}()
	_, err = io.WriteString(stdin, "go\n")
	must(t, err)
	peak := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case rep := <-done:
			if err := cmd.Wait(); err != nil || rep.Error != "" || rep.UID != nobody {
				t.Fatalf("flood child: %+v, %v\n%s", rep, err, stderr.String())
			}
			return rep, peak - baseline
		case <-tick.C:
			peak = max(peak, countFDs(t))
		}
	}
}

// A stranger's descriptors are never installed in the helper: it reads
// strangers without room for any, so the kernel discards them.
func TestHelperHoldsNoStrangerDescriptors(t *testing.T) {
	requireRoot(t)
	h := startHelperWith(t, Owner{UID: 4242, GID: 4242}, func(o *ServerOptions) {
		// Long enough that descriptors held by a connection are seen.
		o.StrangerReadTimeout = 3 * time.Second
	})
	rep, grew := flood(t, h.socket, 2, maxPassedFiles)
	// The connections themselves are descriptors: two, plus slack.
	if grew > 4 {
		t.Fatalf("the helper's open descriptors grew by %d while a stranger passed %d on 2 connections (%+v)", grew, 2*maxPassedFiles, rep)
	}
}

// Each stranger uid gets a few connections; the rest are closed unread, so
// one cannot hold the helper's descriptors or goroutines.
func TestHelperBoundsStrangerConnections(t *testing.T) {
	requireRoot(t)
	h := startHelperWith(t, Owner{UID: 4242, GID: 4242}, func(o *ServerOptions) {
		o.StrangerReadTimeout = 3 * time.Second
		o.StrangerConns = 2
	})
	rep, grew := flood(t, h.socket, 10, 0)
	if grew > 2+2 {
		t.Fatalf("the helper's open descriptors grew by %d with 10 silent connections from one stranger, want at most its 2 slots (%+v)", grew, rep)
	}
	if rep.Closed == 0 {
		t.Fatalf("no connection over the per-uid limit was closed: %+v", rep)
	}
}

// A stranger that sends nothing is answered and dropped quickly, whatever
// time the owner is given.
func TestHelperDropsSilentStranger(t *testing.T) {
	requireRoot(t)
	h := startHelperWith(t, Owner{UID: 4242, GID: 4242}, func(o *ServerOptions) {
		o.ReadTimeout = 30 * time.Second
	})
	rep, _ := flood(t, h.socket, 1, 0)
	if rep.Replied != 1 || rep.SlowestMillis > 5000 {
		t.Fatalf("silent stranger: %+v, want a refusal within about a second (the owner's 30s do not apply)", rep)
	}
}

// The descriptor cap is per request, not per message.
func TestHelperCapsDescriptorsPerRequest(t *testing.T) {
	h := startHelper(t, Owner{UID: os.Getuid(), GID: os.Getgid()})
	null, err := os.Open(os.DevNull)
	must(t, err)
	defer func() { _ = null.Close() }()
	fd := int(null.Fd())
	before := countFDs(t)
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.socket, Net: "unix"})
	must(t, err)
	defer func() { _ = conn.Close() }()
	parts := []string{`{"op":"loop.attach",`, `"args":{"name":"banger-a-cow",`, `"read_only":true}}`}
	for _, p := range parts { // 3 × 3 = 9 descriptors, one more than allowed
		if _, _, err := conn.WriteMsgUnix([]byte(p), unix.UnixRights(fd, fd, fd), nil); err != nil {
			break // refused before the last part: also what is under test
		}
	}
	_ = conn.CloseWrite()
	var resp Response
	must(t, json.NewDecoder(conn).Decode(&resp))
	if resp.OK || resp.Error == nil || !strings.Contains(resp.Error.Message, "too many file descriptors") {
		t.Fatalf("9 descriptors over 3 messages: %s, want too many file descriptors", describe(resp))
	}
	_ = conn.Close()
	// Every descriptor received was closed again (the server closes them
	// before its reply is read; allow it a moment to return).
	deadline := time.Now().Add(5 * time.Second)
	for countFDs(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countFDs(t); n > before {
		t.Fatalf("%d descriptors left open after a refused request", n-before)
	}
	if calls := h.tree.fake.Calls(); len(calls) != 0 {
		t.Fatalf("the request reached the backend: %v", calls)
	}
}

// The helper stops reading an oversize request at the limit instead of
// swallowing it: the sender's writes fail soon after, not after megabytes.
func TestHelperStopsReadingOversizeRequests(t *testing.T) {
	h := startHelper(t, Owner{UID: os.Getuid(), GID: os.Getgid()})
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.socket, Net: "unix"})
	must(t, err)
	defer func() { _ = conn.Close() }()
	const total = 64 << 20
	reply := make(chan Response, 1)
	go func() {
		var resp Response
		_ = json.NewDecoder(conn).Decode(&resp)
		reply <- resp
	}()
	must(t, conn.SetWriteDeadline(time.Now().Add(30*time.Second)))
	written, err := conn.Write([]byte(`{"op":"tap.delete","args":{"name":"`))
	must(t, err)
	filler := []byte(strings.Repeat("a", 64<<10))
	for written < total {
		n, err := conn.Write(filler)
		written += n
		if err != nil {
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("write after %d bytes: %v, want the helper to have closed the connection", written, err)
			}
			break
		}
	}
	// The limit plus what the socket buffers hold; far below the 64 MiB.
	if written >= 4<<20 {
		t.Fatalf("the helper accepted %d bytes of one request; its limit is %d", written, MaxRequestSize)
	}
	select {
	case resp := <-reply:
		if resp.OK || resp.Error == nil || !strings.Contains(resp.Error.Message, "exceeds") {
			t.Errorf("oversize request: %s, want a size refusal", describe(resp))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply to an oversize request")
	}
}

// describe renders a reply for a failure message.
func describe(r Response) string {
	if r.Error == nil {
		return fmt.Sprintf("ok=%v result=%s", r.OK, r.Result)
	}
	return fmt.Sprintf("ok=%v %s: %s", r.OK, r.Error.Code, r.Error.Message)
}
