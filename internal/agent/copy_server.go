package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long the agent swallows the rest of a refused put,
// so the host's writes do not block on a full window while it reads the
// refusal.
const drainTimeout = 30 * time.Second

// resolvePath expands "~" and "~/..." to user's home and requires an
// absolute result. It returns the guest path (for messages) and the local
// path under Root.
func (s *Server) resolvePath(p, user string) (guest, local string, err error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		acct, err := s.execAccount(user)
		if err != nil {
			return "", "", err
		}
		p = filepath.Join(acct.Home, strings.TrimPrefix(strings.TrimPrefix(p, "~"), "/"))
	}
	if !filepath.IsAbs(p) {
		return "", "", fmt.Errorf("%w: guest path %q must be absolute or start with ~/", errInvalid, p)
	}
	guest = filepath.Clean(p)
	return guest, s.guestPath(guest), nil
}

func (s *Server) servePut(stream *yamux.Stream, fr *frameReader, fw *frameWriter, req PutRequest) {
	guest, target, owner, err := s.putTarget(req)
	if err != nil {
		_ = fw.writeJSON(frameReply, failureFrom(err))
		return
	}
	if err := fw.writeJSON(frameReply, Reply{OK: true}); err != nil {
		return
	}
	// The host is trusted: its modes are applied as sent.
	tr := TreeReceiver{Owner: owner, Trusted: true, MaxBytes: s.MaxPutBytes, CheckSpace: true}
	res, err := tr.receiveTree(fr, target)
	res.Path = guest
	if err != nil {
		var remote *RemoteError
		if !errors.As(err, &remote) {
			s.logf("agent: put %s: %v", guest, err)
		}
		_ = fw.writeJSON(frameReply, failureFrom(fmt.Errorf("put %s: %w", guest, err)))
		drain(stream, fr)
		return
	}
	_ = fw.writeJSON(frameReply, Reply{OK: true, Put: &res})
}

// drain discards frames until the sender's end, abort or EOF.
func drain(stream *yamux.Stream, fr *frameReader) {
	_ = stream.SetReadDeadline(time.Now().Add(drainTimeout))
	for {
		typ, _, err := fr.next()
		if err != nil || typ == frameEnd || typ == frameAbort {
			return
		}
	}
}

// putTarget works out where a put lands and who will own what it writes.
func (s *Server) putTarget(req PutRequest) (guest, local string, owner func(Entry) (int, int), err error) {
	guest, local, err = s.resolvePath(req.Path, req.User)
	if err != nil {
		return "", "", nil, err
	}
	if req.Name != "" {
		if strings.ContainsAny(req.Name, "/\x00") || req.Name == "." || req.Name == ".." {
			return "", "", nil, fmt.Errorf("%w: bad file name %q", errInvalid, req.Name)
		}
		if st, err := os.Stat(local); err == nil && st.IsDir() {
			guest, local = filepath.Join(guest, req.Name), filepath.Join(local, req.Name)
		}
	}
	uid, gid := -1, -1
	if req.User != "" {
		acct, err := s.userDB().lookup(req.User)
		if err != nil {
			return "", "", nil, err
		}
		uid, gid = acct.UID, acct.GID
	}
	parent := filepath.Dir(local)
	st, err := os.Stat(parent)
	if errors.Is(err, os.ErrNotExist) && req.MakeParents {
		if err := s.makeParents(parent, uid, gid); err != nil {
			return "", "", nil, err
		}
		st, err = os.Stat(parent)
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("directory %s: %w", filepath.Dir(guest), err)
	}
	if !st.IsDir() {
		return "", "", nil, fmt.Errorf("%w: %s is not a directory", errInvalid, filepath.Dir(guest))
	}
	if err := unix.Access(parent, unix.W_OK); err != nil {
		return "", "", nil, fmt.Errorf("cannot write in %s: %w", filepath.Dir(guest), os.ErrPermission)
	}
	switch {
	case os.Geteuid() != 0:
		owner = func(Entry) (int, int) { return -1, -1 }
	case req.PreserveOwner:
		owner = func(e Entry) (int, int) { return e.UID, e.GID }
	case req.User != "":
		owner = func(Entry) (int, int) { return uid, gid }
	default:
		// Like a file created there by the directory's owner.
		pst := st.Sys().(*syscall.Stat_t)
		owner = func(Entry) (int, int) { return int(pst.Uid), int(pst.Gid) }
	}
	return guest, local, owner, nil
}

// makeParents creates dir and its missing parents, giving new ones to
// uid:gid, so synced dotfiles under ~/.config belong to the user.
func (s *Server) makeParents(dir string, uid, gid int) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if uid >= 0 && os.Geteuid() == 0 {
			if err := os.Lchown(missing[i], uid, gid); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) serveGet(fw *frameWriter, req GetRequest) {
	guest, local, err := s.resolvePath(req.Path, req.User)
	if err != nil {
		_ = fw.writeJSON(frameReply, failureFrom(err))
		return
	}
	st, err := os.Stat(local)
	if err != nil {
		_ = fw.writeJSON(frameReply, failureFrom(fmt.Errorf("get %s: %w", guest, err)))
		return
	}
	if st.Mode().IsRegular() && req.MaxBytes > 0 && st.Size() > req.MaxBytes {
		_ = fw.writeJSON(frameReply, failure(CodeTooLarge, "%s is %d bytes, more than the limit of %d", guest, st.Size(), req.MaxBytes))
		return
	}
	if err := fw.writeJSON(frameReply, Reply{OK: true}); err != nil {
		return
	}
	ts := TreeSender{FollowRoot: true, MaxBytes: req.MaxBytes}
	if _, err := ts.sendTree(fw, local); err != nil {
		s.logf("agent: get %s: %v", guest, err)
	}
}
