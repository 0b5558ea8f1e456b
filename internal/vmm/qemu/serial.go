package qemu

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// serialChannel is the host end of the virtio-serial agent port: one Unix
// socket connection to QEMU, kept open for as long as the Instance
// supervises the VM, lent to one holder at a time.
//
// Keeping the connection open is what makes the port behave like the
// single long-lived stream the agent protocol expects. Each time the host
// disconnects, the guest's reads on the port return end of file and its
// writes block until a host is back; a fresh connection per holder would
// put the guest through that on every hand-over.
type serialChannel struct {
	path string
	// slot holds a token while a holder has the stream.
	slot chan struct{}

	mu   sync.Mutex
	conn net.Conn // nil until first needed, and after it failed
	shut bool     // set when QEMU is gone: no more dialing
}

func newSerialChannel(path string) *serialChannel {
	return &serialChannel{path: path, slot: make(chan struct{}, 1)}
}

// acquire waits for the stream to be free, then returns it connected.
// done ends the wait when QEMU exits.
func (s *serialChannel) acquire(ctx context.Context, done <-chan struct{}) (net.Conn, error) {
	select {
	case s.slot <- struct{}{}:
	case <-done:
		return nil, errQEMUGone
	case <-ctx.Done():
		return nil, &busyError{cause: ctx.Err()}
	}
	conn, err := s.connect(ctx)
	if err != nil {
		<-s.slot
		return nil, err
	}
	return &serialStream{ch: s, conn: conn}, nil
}

var errQEMUGone = errors.New("qemu is not running")

// busyError is ErrAgentBusy carrying why the wait ended.
type busyError struct{ cause error }

func (e *busyError) Error() string { return ErrAgentBusy.Error() + " (" + e.cause.Error() + ")" }
func (e *busyError) Is(target error) bool {
	return target == ErrAgentBusy || errors.Is(e.cause, target)
}

func (s *serialChannel) connect(ctx context.Context) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return nil, errQEMUGone
	}
	if s.conn != nil {
		return s.conn, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.path)
	if err != nil {
		return nil, err
	}
	s.conn = conn
	return conn, nil
}

// drop forgets conn after it failed, so the next holder reconnects.
func (s *serialChannel) drop(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == conn {
		s.conn.Close()
		s.conn = nil
	}
}

// close ends the connection for good; the Instance calls it when QEMU has
// exited.
func (s *serialChannel) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shut = true
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// serialStream is one holder's use of the channel's connection. Closing
// it ends this holder's use, not the connection: reads and writes still in
// progress are interrupted and waited for, so none of them can consume
// bytes meant for the next holder, and then the stream is handed back.
type serialStream struct {
	ch   *serialChannel
	conn net.Conn

	mu     sync.RWMutex
	closed bool
	busy   sync.WaitGroup // reads and writes in progress
	once   sync.Once
}

// enter registers an I/O call; false if the stream is closed.
func (s *serialStream) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.busy.Add(1)
	return true
}

func (s *serialStream) Read(b []byte) (int, error) {
	if !s.enter() {
		return 0, net.ErrClosed
	}
	defer s.busy.Done()
	n, err := s.conn.Read(b)
	return n, s.check(err)
}

func (s *serialStream) Write(b []byte) (int, error) {
	if !s.enter() {
		return 0, net.ErrClosed
	}
	defer s.busy.Done()
	n, err := s.conn.Write(b)
	return n, s.check(err)
}

// check reports err as the holder should see it and drops the connection
// if it failed for real (QEMU closed it) rather than timing out.
func (s *serialStream) check(err error) error {
	if err == nil {
		return nil
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		// Interrupted by Close: the connection is fine.
		return net.ErrClosed
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		s.ch.drop(s.conn)
	}
	return err
}

// Close interrupts this holder's reads and writes, waits for them, and
// hands the stream back. The connection to QEMU stays open.
func (s *serialStream) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		_ = s.conn.SetDeadline(time.Unix(1, 0))
		s.busy.Wait()
		_ = s.conn.SetDeadline(time.Time{})
		<-s.ch.slot
	})
	return nil
}

func (s *serialStream) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *serialStream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Deadlines apply to the shared connection, which the holder has to
// itself until Close resets them. After Close they are refused, so a late
// deadline (a context.AfterFunc firing) cannot cut the next holder off.
func (s *serialStream) SetDeadline(t time.Time) error {
	return s.setDeadline(func() error { return s.conn.SetDeadline(t) })
}

func (s *serialStream) SetReadDeadline(t time.Time) error {
	return s.setDeadline(func() error { return s.conn.SetReadDeadline(t) })
}

func (s *serialStream) SetWriteDeadline(t time.Time) error {
	return s.setDeadline(func() error { return s.conn.SetWriteDeadline(t) })
}

func (s *serialStream) setDeadline(set func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return net.ErrClosed
	}
	return set()
}
