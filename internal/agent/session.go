package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	helloPrefix = "BANGER-AGENT/1 "
	helloWord   = "HELLO "
	readyWord   = "READY "
	errorWord   = "ERROR "
	// nonceLen is the hex length of a hello nonce.
	nonceLen = 32
	// helloResend is how often a host repeats its hello while waiting for
	// READY; on a socket the answer comes long before. The first
	// helloFastResends repeats come every helloFastResend instead: on a
	// serial port a first hello is often lost — the port drops what
	// arrives while the guest has it closed (an agent reopening it within
	// reopenFirstDelay), and an agent whose previous session is still open
	// reads it as that session's bytes — and a whole helloResend before the
	// next one cost every session after the agent wait 0.1 s.
	helloResend      = 100 * time.Millisecond
	helloFastResend  = 5 * time.Millisecond
	helloFastResends = 40
	// maxHelloScan bounds the stale bytes a host discards while waiting for
	// READY, so a peer that streams garbage cannot keep it busy forever.
	maxHelloScan = 64 << 20
)

func yamuxConfig(logf func(string, ...any)) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.KeepAliveInterval = keepAlive
	cfg.ConnectionWriteTimeout = writeTimeout
	cfg.MaxStreamWindowSize = streamWindow
	cfg.StreamOpenTimeout = 30 * time.Second
	cfg.StreamCloseTimeout = time.Minute
	cfg.LogOutput = nil
	cfg.Logger = log.New(logWriter(logf), "", 0)
	return cfg
}

// logWriter adapts a printf-style logger for yamux's *log.Logger.
type logWriter func(string, ...any)

func (l logWriter) Write(p []byte) (int, error) {
	if l != nil {
		l("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// readWriteCloser joins a buffered reader (which may hold bytes read past
// the hello) with the transport's writer and closer.
type readWriteCloser struct {
	io.Reader
	io.Writer
	io.Closer
}

// clientHello runs the host half of the hello on conn and returns a reader
// positioned just after the agent's READY.
func clientHello(ctx context.Context, conn net.Conn) (io.Reader, error) {
	nonce := make([]byte, nonceLen/2)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	hello := []byte(helloPrefix + helloWord + hex.EncodeToString(nonce) + "\n")
	ready := []byte(helloPrefix + readyWord + hex.EncodeToString(nonce) + "\n")

	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	// Hellos are resent from a goroutine while the reader scans; both end
	// when the scan does.
	var (
		wmu     sync.Mutex
		werr    error
		stopped bool // READY seen: the session's bytes may follow, hellos must not
	)
	send := func() {
		wmu.Lock()
		defer wmu.Unlock()
		if werr == nil && !stopped {
			_, werr = conn.Write(hello)
		}
	}
	send()
	done := make(chan struct{})
	go func() {
		for n := 0; ; n++ {
			t := time.NewTimer(helloResendDelay(n))
			select {
			case <-done:
				t.Stop()
				return
			case <-t.C:
				send()
			}
		}
	}()
	br := bufio.NewReader(conn)
	err := scanForReady(br, ready)
	close(done)
	// A repeat whose timer fired just now may still be on its way to
	// send; once stopped is set it writes nothing, so no hello can land
	// after the session's first bytes (the agent skips repeats only
	// before them).
	wmu.Lock()
	stopped = true
	if err == nil && werr != nil {
		err = fmt.Errorf("send hello: %w", werr)
	}
	wmu.Unlock()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
		}
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return br, nil
}

// helloResendDelay is the wait before the host's n-th repeat (from 0) of
// its hello.
func helloResendDelay(n int) time.Duration {
	if n < helloFastResends {
		return helloFastResend
	}
	return helloResend
}

// scanForReady reads until the exact READY line, skipping anything else (a
// previous session's bytes on a serial port). An ERROR line from the agent
// ends the wait with its reason.
func scanForReady(br *bufio.Reader, ready []byte) error {
	var scanned int
	for scanned < maxHelloScan {
		line, err := br.ReadSlice('\n')
		scanned += len(line)
		if i := bytes.LastIndex(line, []byte(helloPrefix)); i >= 0 && err == nil {
			tail := line[i:]
			if bytes.Equal(tail, ready) {
				return nil
			}
			if reason, ok := bytes.CutPrefix(tail, []byte(helloPrefix+errorWord)); ok {
				return fmt.Errorf("agent refused the session: %s", bytes.TrimSpace(reason))
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return fmt.Errorf("connection closed before the agent said READY: %w", io.ErrUnexpectedEOF)
		default:
			return fmt.Errorf("wait for READY: %w", err)
		}
	}
	return fmt.Errorf("no READY from the agent within %d bytes", maxHelloScan)
}

// parseHello returns the nonce of a hello line (with its newline), or false.
func parseHello(line []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(helloPrefix+helloWord))
	if !ok || len(rest) != nonceLen+1 || rest[nonceLen] != '\n' {
		return "", false
	}
	if _, err := hex.DecodeString(string(rest[:nonceLen])); err != nil {
		return "", false
	}
	return string(rest[:nonceLen]), true
}

// serverHelloSocket runs the agent half on a fresh socket connection: the
// first line must be a hello, else the connection is refused with a reason.
func serverHelloSocket(conn net.Conn) (io.Reader, error) {
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	br := bufio.NewReaderSize(conn, 4096)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("hello line too long")
		}
		refuse(conn, "expected a hello line")
		return nil, fmt.Errorf("read hello: %w", err)
	}
	nonce, ok := parseHello(line)
	if !ok {
		refuse(conn, "expected a hello line")
		return nil, fmt.Errorf("not a hello: %q", truncate(line))
	}
	if _, err := conn.Write([]byte(helloPrefix + readyWord + nonce + "\n")); err != nil {
		return nil, fmt.Errorf("send READY: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return &helloSkipper{r: br, hello: append([]byte(nil), line...)}, nil
}

func refuse(conn net.Conn, reason string) {
	_, _ = conn.Write([]byte(helloPrefix + errorWord + reason + "\n"))
}

// helloSkipper drops copies of the accepted hello that the host resent
// before it saw READY, then passes the session's bytes through. A yamux
// frame starts with version byte 0, a hello with 'B', so one byte decides.
type helloSkipper struct {
	r     *bufio.Reader
	hello []byte
	done  bool
}

func (h *helloSkipper) Read(p []byte) (int, error) {
	for !h.done {
		b, err := h.r.Peek(1)
		if err != nil {
			return 0, err
		}
		if b[0] != helloPrefix[0] {
			h.done = true
			break
		}
		line, err := h.r.ReadSlice('\n')
		if err != nil || !bytes.Equal(line, h.hello) {
			return 0, errors.New("unexpected bytes between the hello and the session")
		}
	}
	return h.r.Read(p)
}

// deadlineReadWriter is a byte stream with deadlines: *os.File for a
// character device or pty opened non-blocking.
type deadlineReadWriter interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// channelConn is one session's view of a long-lived channel (the serial
// port). Closing it ends the session's I/O — blocked reads and writes return
// at once — without closing the port, which stays open for the agent's life.
type channelConn struct {
	ch     deadlineReadWriter
	r      io.Reader
	mu     sync.Mutex
	closed bool
	busy   sync.WaitGroup
}

func (c *channelConn) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.busy.Add(1)
	return true
}

func (c *channelConn) Read(p []byte) (int, error) {
	if !c.enter() {
		return 0, net.ErrClosed
	}
	defer c.busy.Done()
	return c.r.Read(p)
}

func (c *channelConn) Write(p []byte) (int, error) {
	if !c.enter() {
		return 0, net.ErrClosed
	}
	defer c.busy.Done()
	// A write with no host behind the port blocks; the deadline turns that
	// into an error the session dies of, instead of a hang.
	_ = c.ch.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.ch.Write(p)
}

// Close wakes any blocked Read or Write with an expired deadline and waits
// until they have returned, so the next session owns the port alone.
func (c *channelConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	past := time.Unix(1, 0)
	_ = c.ch.SetReadDeadline(past)
	_ = c.ch.SetWriteDeadline(past)
	c.busy.Wait()
	_ = c.ch.SetReadDeadline(time.Time{})
	_ = c.ch.SetWriteDeadline(time.Time{})
	return nil
}

// errHungUp is a channel read's EOF: no host is connected to the port's
// other end (any more).
var errHungUp = errors.New("the host end of the channel hung up")

// waitForHello discards bytes on the channel until a hello line, answers
// READY and returns a reader positioned after it. The nonce is checked for
// shape only: any host that speaks the protocol may take the port over.
func waitForHello(ctx context.Context, ch deadlineReadWriter) (io.Reader, error) {
	br := bufio.NewReaderSize(readerFunc(func(p []byte) (int, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// A bounded read lets ctx be noticed on an idle port.
		_ = ch.SetReadDeadline(time.Now().Add(time.Second))
		n, err := ch.Read(p)
		switch {
		case n == 0 && errors.Is(err, os.ErrDeadlineExceeded):
			return 0, nil
		case n == 0 && errors.Is(err, io.EOF):
			// A virtio port reads as EOF while no host is connected.
			return 0, errHungUp
		}
		return n, err
	}), 4096)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.ErrNoProgress) {
				continue
			}
			return nil, err
		}
		if err != nil {
			continue
		}
		i := bytes.LastIndex(line, []byte(helloPrefix+helloWord))
		if i < 0 {
			continue
		}
		nonce, ok := parseHello(line[i:])
		if !ok {
			continue
		}
		hello := append([]byte(nil), line[i:]...)
		_ = ch.SetReadDeadline(time.Time{})
		_ = ch.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err = ch.Write([]byte(helloPrefix + readyWord + nonce + "\n"))
		_ = ch.SetWriteDeadline(time.Time{})
		if err != nil {
			return nil, fmt.Errorf("send READY: %w", err)
		}
		// The wrapping reader must not apply the scan's short deadlines any
		// more; hand the session the buffered bytes and the bare channel.
		rest := io.MultiReader(bytes.NewReader(buffered(br)), ch)
		return &helloSkipper{r: bufio.NewReaderSize(rest, 64<<10), hello: hello}, nil
	}
}

// buffered drains what br already holds.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
