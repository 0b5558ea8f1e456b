package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenVsock listens for AF_VSOCK stream connections on port, any CID.
//
// net.FileListener cannot wrap the socket: the standard library only adopts
// inet and unix sockets and answers EPROTONOSUPPORT for AF_VSOCK. So the
// socket is made non-blocking and handed to os.NewFile, which registers it
// with the runtime poller; Accept and the accepted connections then block in
// the poller like any net.Conn, deadlines included.
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w (is the vsock driver loaded?)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	file := os.NewFile(uintptr(fd), fmt.Sprintf("vsock-listener:%d", port))
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	return &vsockListener{
		file: file,
		raw:  raw,
		addr: VsockAddr{CID: unix.VMADDR_CID_ANY, Port: port},
	}, nil
}

type vsockListener struct {
	file   *os.File
	raw    syscall.RawConn
	addr   VsockAddr
	closed atomic.Bool
}

func (l *vsockListener) Accept() (net.Conn, error) {
	var (
		nfd       int
		peer      unix.Sockaddr
		acceptErr error
	)
	err := l.raw.Read(func(fd uintptr) bool {
		nfd, peer, acceptErr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		// Returning false parks the goroutine in the poller until the
		// listener is readable again.
		return !errors.Is(acceptErr, unix.EAGAIN)
	})
	if err == nil {
		err = acceptErr
	}
	if err != nil {
		// The raw-conn error after Close is the poller's private "use of
		// closed file"; report the sentinel net callers test for.
		if l.closed.Load() {
			err = net.ErrClosed
		}
		return nil, &net.OpError{Op: "accept", Net: "vsock", Addr: l.addr, Err: err}
	}
	remote := VsockAddr{}
	if vm, ok := peer.(*unix.SockaddrVM); ok {
		remote = VsockAddr{CID: vm.CID, Port: vm.Port}
	}
	local := l.addr
	if sa, err := unix.Getsockname(nfd); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			local = VsockAddr{CID: vm.CID, Port: vm.Port}
		}
	}
	return &vsockConn{
		file:   os.NewFile(uintptr(nfd), "vsock:"+remote.String()),
		local:  local,
		remote: remote,
	}, nil
}

func (l *vsockListener) Close() error {
	l.closed.Store(true)
	return l.file.Close()
}

func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is an accepted AF_VSOCK stream. The non-blocking fd inside
// os.File gives it poller-backed reads, writes and deadlines.
type vsockConn struct {
	file          *os.File
	local, remote VsockAddr
}

func (c *vsockConn) Read(b []byte) (int, error)         { return c.file.Read(b) }
func (c *vsockConn) Write(b []byte) (int, error)        { return c.file.Write(b) }
func (c *vsockConn) Close() error                       { return c.file.Close() }
func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.file.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.file.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.file.SetWriteDeadline(t) }
