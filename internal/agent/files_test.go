package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// makeTree builds a small tree with the cases a copy must keep.
func makeTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "plain.txt"), "hello\n", 0o640)
	writeFile(t, filepath.Join(src, "bin", "tool"), "#!/bin/sh\necho hi\n", 0o755)
	writeFile(t, filepath.Join(src, "deep", "er", "x"), strings.Repeat("x", 300_000), 0o600)
	if err := os.Symlink("plain.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "empty"), 0o711); err != nil {
		t.Fatal(err)
	}
	return src
}

// sameTree compares content, modes and links of two trees.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		ia, _ := os.Lstat(p)
		ib, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s missing in copy: %v", rel, err)
			return nil
		}
		if ia.Mode() != ib.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, ib.Mode(), ia.Mode())
		}
		switch {
		case ia.Mode().IsRegular():
			ca, _ := os.ReadFile(p)
			cb, _ := os.ReadFile(q)
			if !bytes.Equal(ca, cb) {
				t.Errorf("%s: content differs", rel)
			}
			if !ia.ModTime().Equal(ib.ModTime()) {
				t.Errorf("%s: mtime %v, want %v", rel, ib.ModTime(), ia.ModTime())
			}
		case ia.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				t.Errorf("%s: link %q, want %q", rel, lb, la)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	root := t.TempDir()
	c := newClient(t, startServer(t, &Server{Root: root}))
	src := makeTree(t)
	if err := os.MkdirAll(filepath.Join(root, "dst"), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress int
	res, err := c.Put(testCtx(t), PutRequest{Path: "/dst", Name: "src"}, src, TreeSender{FollowRoot: true, Progress: func(n int) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != "/dst/src" || res.Files != 3 || res.Dirs != 5 || res.Links != 1 || res.Bytes != 300_000+6+18 || progress != int(res.Bytes) {
		t.Fatalf("put result %+v (progress %d)", res, progress)
	}
	sameTree(t, src, filepath.Join(root, "dst", "src"))

	back := filepath.Join(t.TempDir(), "back")
	res, err = c.Get(testCtx(t), GetRequest{Path: "/dst/src"}, back, TreeReceiver{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 3 || res.Links != 1 {
		t.Fatalf("get result %+v", res)
	}
	sameTree(t, src, back)

	// A single file to an exact path, replacing what was there.
	writeFile(t, filepath.Join(root, "dst", "one"), "old", 0o644)
	if _, err := c.Put(testCtx(t), PutRequest{Path: "/dst/one"}, filepath.Join(src, "plain.txt"), TreeSender{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "dst", "one")); string(b) != "hello\n" {
		t.Fatalf("replaced file holds %q", b)
	}
}

func TestPutOwnership(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	c := newClient(t, startServer(t, &Server{Root: root}))
	src := makeTree(t)
	if err := os.Chown(filepath.Join(src, "plain.txt"), 4321, 4322); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) (uint32, uint32) {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := st.Sys().(*syscall.Stat_t)
		return s.Uid, s.Gid
	}
	// As a named user: everything belongs to them.
	if _, err := c.Put(testCtx(t), PutRequest{Path: "/as-user", User: "nobody"}, src, TreeSender{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"as-user", "as-user/plain.txt", "as-user/deep/er/x", "as-user/link"} {
		if uid, gid := owner(filepath.Join(root, p)); uid != 65534 || gid != 65534 {
			t.Errorf("%s owned by %d:%d, want nobody", p, uid, gid)
		}
	}
	// Preserved: the numeric ids travel.
	if _, err := c.Put(testCtx(t), PutRequest{Path: "/kept", PreserveOwner: true}, src, TreeSender{}); err != nil {
		t.Fatal(err)
	}
	if uid, gid := owner(filepath.Join(root, "kept", "plain.txt")); uid != 4321 || gid != 4322 {
		t.Errorf("preserved owner %d:%d, want 4321:4322", uid, gid)
	}
	// Neither: the directory's owner, like a file its owner created there.
	dir := filepath.Join(root, "owned")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 777, 778); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(testCtx(t), PutRequest{Path: "/owned/f"}, filepath.Join(src, "plain.txt"), TreeSender{}); err != nil {
		t.Fatal(err)
	}
	if uid, gid := owner(filepath.Join(dir, "f")); uid != 777 || gid != 778 {
		t.Errorf("inherited owner %d:%d, want 777:778", uid, gid)
	}
}

func TestPutAndGetRefusals(t *testing.T) {
	root := t.TempDir()
	c := newClient(t, startServer(t, &Server{Root: root, MaxPutBytes: 1000}))
	src := makeTree(t)
	small := filepath.Join(src, "plain.txt")
	if err := os.Mkdir(filepath.Join(root, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "afile"), "x", 0o644)
	puts := []struct {
		name     string
		req      PutRequest
		src      string
		wantCode string
		wantMsg  string
	}{
		{"relative path", PutRequest{Path: "rel/x"}, small, CodeInvalid, "must be absolute"},
		{"missing parent", PutRequest{Path: "/no/such/x"}, small, CodeNotFound, "directory /no/such"},
		{"parent is a file", PutRequest{Path: "/afile/x"}, small, CodeInvalid, "/afile is not a directory"},
		{"file over a directory", PutRequest{Path: "/adir"}, small, CodeFailed, "cannot overwrite directory"},
		{"directory over a file", PutRequest{Path: "/afile"}, src, CodeFailed, "cannot overwrite non-directory"},
		{"over the size limit", PutRequest{Path: "/big"}, src, CodeTooLarge, "at most"},
		{"bad name", PutRequest{Path: "/adir", Name: "../x"}, small, CodeInvalid, "bad file name"},
		{"unknown user", PutRequest{Path: "~/x", User: "no-such-user-xyz"}, small, CodeNoUser, "no such user"},
	}
	for _, tt := range puts {
		t.Run("put "+tt.name, func(t *testing.T) {
			_, err := c.Put(testCtx(t), tt.req, tt.src, TreeSender{})
			var remote *RemoteError
			if !errors.As(err, &remote) || remote.Code != tt.wantCode || !strings.Contains(remote.Message, tt.wantMsg) {
				t.Fatalf("err = %v, want code %s with %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "big")); err == nil {
		t.Error("a refused put left files behind")
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "*", ".banger-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	writeFile(t, filepath.Join(root, "large"), strings.Repeat("y", 5000), 0o644)
	gets := []struct {
		name     string
		req      GetRequest
		wantCode string
		wantMsg  string
	}{
		{"missing", GetRequest{Path: "/nope"}, CodeNotFound, "no such file"},
		{"over the limit", GetRequest{Path: "/large", MaxBytes: 100}, CodeTooLarge, "more than the limit of 100"},
	}
	for _, tt := range gets {
		t.Run("get "+tt.name, func(t *testing.T) {
			_, err := c.Get(testCtx(t), tt.req, filepath.Join(t.TempDir(), "x"), TreeReceiver{})
			var remote *RemoteError
			if !errors.As(err, &remote) || remote.Code != tt.wantCode || !strings.Contains(remote.Message, tt.wantMsg) {
				t.Fatalf("err = %v, want code %s with %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
	// The session survives all of it.
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestPutMakeParentsAndHome(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	writeFile(t, passwd, "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n", 0o644)
	srv := &Server{Root: root, users: userDB{passwd: passwd, group: filepath.Join(dir, "group")}}
	c := newClient(t, startServer(t, srv))
	src := filepath.Join(t.TempDir(), "gh")
	writeFile(t, filepath.Join(src, "hosts.yml"), "x: 1\n", 0o600)
	res, err := c.Put(testCtx(t), PutRequest{Path: "~/.config/gh", User: "alice", MakeParents: true}, src, TreeSender{})
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("needs root to chown to alice: %v", err)
		}
		t.Fatal(err)
	}
	if res.Path != "/home/alice/.config/gh" {
		t.Fatalf("landed at %s", res.Path)
	}
	if b, err := os.ReadFile(filepath.Join(root, "home/alice/.config/gh/hosts.yml")); err != nil || string(b) != "x: 1\n" {
		t.Fatalf("%q %v", b, err)
	}
}

// frames builds a raw copy stream.
type frames struct{ buf bytes.Buffer }

func (f *frames) add(typ byte, payload []byte) *frames {
	var h [frameHeader]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	f.buf.Write(h[:])
	f.buf.Write(payload)
	return f
}

func (f *frames) entry(e Entry) *frames {
	b, _ := json.Marshal(e)
	return f.add(frameEntry, b)
}

// TestReceiveTreeRefusesUnsafeStreams: whatever a peer sends, nothing is
// written outside the destination.
func TestReceiveTreeRefusesUnsafeStreams(t *testing.T) {
	end := []byte(`{}`)
	dir := Entry{Type: EntryDir, Mode: 0o755}
	tests := []struct {
		name    string
		stream  *frames
		wantErr string
	}{
		{"dot-dot", new(frames).entry(dir).entry(Entry{Path: "../escape", Type: EntryFile, Size: 1}).add(frameData, []byte("x")).add(frameEnd, end), "unsafe path"},
		{"absolute", new(frames).entry(dir).entry(Entry{Path: "/etc/x", Type: EntryFile}).add(frameEnd, end), "unsafe path"},
		{"unclean", new(frames).entry(dir).entry(Entry{Path: "a/../../x", Type: EntryFile}).add(frameEnd, end), "unsafe path"},
		{"child before its dir", new(frames).entry(dir).entry(Entry{Path: "a/b", Type: EntryFile}).add(frameEnd, end), "before its directory"},
		{"through a sent symlink", new(frames).entry(dir).entry(Entry{Path: "l", Type: EntrySymlink, Link: "/"}).entry(Entry{Path: "l/x", Type: EntryFile}).add(frameEnd, end), "before its directory"},
		{"root not first", new(frames).entry(Entry{Path: "x", Type: EntryFile}), "must be its root"},
		{"short data", new(frames).entry(Entry{Type: EntryFile, Size: 10}).add(frameData, []byte("abc")).add(frameEnd, end), "expected 7 more bytes"},
		{"too much data", new(frames).entry(Entry{Type: EntryFile, Size: 2}).add(frameData, []byte("abc")), "more data than"},
		{"stream cut", new(frames).entry(Entry{Type: EntryFile, Size: 10}).add(frameData, []byte("abc")), "unexpected EOF"},
		{"no entries", new(frames).add(frameEnd, end), "without any entry"},
		{"abort", new(frames).entry(dir).add(frameAbort, []byte(`{"error":"disk on fire"}`)), "disk on fire"},
		{"garbage json", new(frames).add(frameEntry, []byte("{nope")), "malformed copy frame"},
		{"unknown type", new(frames).entry(Entry{Type: "fifo"}), "unknown entry type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			_, err := TreeReceiver{}.receiveTree(newFrameReader(&tt.stream.buf), dest)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			for _, p := range []string{filepath.Join(parent, "escape"), "/etc/x"} {
				if _, err := os.Lstat(p); err == nil && p != "/etc/x" {
					t.Fatalf("%s was written", p)
				}
			}
			leftovers, _ := filepath.Glob(filepath.Join(parent, ".banger-*"))
			if len(leftovers) > 0 {
				t.Fatalf("temporary files left: %v", leftovers)
			}
		})
	}
}
