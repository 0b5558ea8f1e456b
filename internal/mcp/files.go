package mcp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
)

// copier moves files in and out of VMs: *api.Client.
type copier interface {
	VMCopyTo(ctx context.Context, req api.VMCopyRequest, src string, ts agent.TreeSender) (agent.CopyResult, error)
	VMCopyFrom(ctx context.Context, req api.VMCopyRequest, dest string, tr agent.TreeReceiver) (agent.CopyResult, error)
}

// ReadArgs are read_file's arguments.
type ReadArgs struct {
	Name     string `json:"name" jsonschema:"the VM's name"`
	Path     string `json:"path" jsonschema:"guest path: absolute, or relative to the user's home"`
	MaxBytes int64  `json:"max_bytes,omitempty" jsonschema:"refuse files larger than this; default and maximum set by the server (16 MiB unless configured)"`
}

// FileContent is read_file's result.
type FileContent struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Encoding string `json:"encoding" jsonschema:"utf-8 when content is the file's text, base64 when the file is not valid UTF-8"`
	Content  string `json:"content"`
}

// WriteArgs are write_file's arguments.
type WriteArgs struct {
	Name     string `json:"name" jsonschema:"the VM's name"`
	Path     string `json:"path" jsonschema:"guest path of the file: absolute, or relative to the user's home; its directory must exist"`
	Content  string `json:"content" jsonschema:"the file's contents"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64 for binary content"`
	Mode     string `json:"mode,omitempty" jsonschema:"permission bits in octal, default 0644"`
}

// WriteResult is write_file's result.
type WriteResult struct {
	Path  string `json:"path" jsonschema:"where the file landed in the guest"`
	Bytes int64  `json:"bytes"`
}

// ListArgs are list_dir's arguments.
type ListDirArgs struct {
	Name       string `json:"name" jsonschema:"the VM's name"`
	Path       string `json:"path,omitempty" jsonschema:"guest directory: absolute, or relative to the user's home; default the home"`
	MaxEntries int    `json:"max_entries,omitempty" jsonschema:"list at most this many entries (default 1000, at most 10000)"`
}

// DirEntry is one list_dir entry.
type DirEntry struct {
	Name    string `json:"name"`
	Type    string `json:"type" jsonschema:"file, dir, symlink or other"`
	Size    int64  `json:"size"`
	Mode    string `json:"mode" jsonschema:"permission bits in octal"`
	ModTime string `json:"mod_time" jsonschema:"RFC 3339 UTC"`
}

// DirListing is list_dir's result.
type DirListing struct {
	Path      string     `json:"path"`
	Entries   []DirEntry `json:"entries"`
	Truncated bool       `json:"truncated" jsonschema:"true when the directory has more than max_entries entries"`
}

// CopyArgs are copy_in's and copy_out's arguments.
type CopyArgs struct {
	Name      string `json:"name" jsonschema:"the VM's name"`
	HostPath  string `json:"host_path" jsonschema:"host path relative to the server's root directory (copy_out: a new path, or a directory to copy into)"`
	GuestPath string `json:"guest_path" jsonschema:"guest path: absolute, or relative to the user's home (copy_in: an existing directory receives the copy inside it)"`
}

// CopyResult is copy_in's and copy_out's result.
type CopyResult struct {
	Destination string `json:"destination" jsonschema:"where the copy landed"`
	Files       int    `json:"files"`
	Dirs        int    `json:"dirs"`
	Symlinks    int    `json:"symlinks"`
	Bytes       int64  `json:"bytes"`
	Skipped     int    `json:"skipped" jsonschema:"special files (sockets, devices, FIFOs) not copied"`
}

const (
	defaultListEntries = 1000
	maxListEntries     = 10000
	copyIdleTimeout    = time.Minute
	copyMinFree        = 256 << 20
)

func (s *Server) addFileTools() {
	sdk.AddTool(s.srv, &sdk.Tool{Name: "read_file", Description: "Read a file from a running VM. Text comes back as is; a file that is not UTF-8 comes back base64 (encoding says which). Files larger than max_bytes are refused: use copy_out for them."}, s.readFile)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "write_file", Description: "Write a file in a running VM (replacing one that exists), owned by the VM's login user. Binary content goes base64 with encoding base64."}, s.writeFile)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "list_dir", Description: "List a directory in a running VM: names, types, sizes, modes and modification times."}, s.listDir)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "copy_in", Description: "Copy a host file or directory tree (under the server's root directory) into a running VM."}, s.copyIn)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "copy_out", Description: "Copy a file or directory tree out of a running VM to a new host path under the server's root directory; the copy is written as cp -r writes one (no setuid bits, your umask)."}, s.copyOut)
}

func (s *Server) readFile(ctx context.Context, req *sdk.CallToolRequest, in ReadArgs) (*sdk.CallToolResult, FileContent, error) {
	limit := s.opts.Limits.FileBytes
	switch {
	case in.MaxBytes < 0 || in.MaxBytes > limit:
		return nil, FileContent{}, toolError(invalid("max_bytes %d: use 1 to %d (copy_out moves larger files)", in.MaxBytes, limit))
	case in.MaxBytes > 0:
		limit = in.MaxBytes
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, FileContent{}, toolError(err)
	}
	gpath := api.GuestPath(in.Path)
	data, err := s.fetch(ctx, vm.Name, gpath, limit)
	if err != nil {
		return nil, FileContent{}, toolError(err)
	}
	out := FileContent{Path: gpath, Size: int64(len(data)), Encoding: "utf-8", Content: string(data)}
	if !utf8.Valid(data) {
		out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(data)
	}
	return nil, out, nil
}

// fetch copies one guest file of at most limit bytes into memory, through
// a private temporary directory.
func (s *Server) fetch(ctx context.Context, vm, gpath string, limit int64) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "banger-mcp-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	dest := filepath.Join(tmp, "f")
	tr := agent.TreeReceiver{Umask: 0o077, MaxBytes: limit, MaxEntries: 1, IdleTimeout: copyIdleTimeout}
	_, err = s.opts.Daemon.VMCopyFrom(ctx, api.VMCopyRequest{Name: vm, Path: gpath, MaxBytes: limit}, dest, tr)
	var le *agent.LimitError
	switch {
	case errors.As(err, &le) && le.Limit == agent.LimitEntries:
		return nil, invalid("%s is a directory; list_dir lists it", gpath)
	case errors.As(err, &le):
		return nil, invalid("%s is larger than %d bytes; raise max_bytes (up to %d) or use copy_out", gpath, limit, s.opts.Limits.FileBytes)
	case err != nil:
		return nil, err
	}
	st, err := os.Lstat(dest)
	if err != nil {
		return nil, err
	}
	switch {
	case st.IsDir():
		return nil, invalid("%s is a directory; list_dir lists it", gpath)
	case st.Mode()&os.ModeSymlink != 0:
		target, _ := os.Readlink(dest)
		return nil, invalid("%s is a symlink to %q; read that path instead", gpath, target)
	case !st.Mode().IsRegular():
		return nil, invalid("%s is not a regular file", gpath)
	}
	return os.ReadFile(dest)
}

func (s *Server) writeFile(ctx context.Context, req *sdk.CallToolRequest, in WriteArgs) (*sdk.CallToolResult, WriteResult, error) {
	data, mode, err := s.decodeWrite(in)
	if err != nil {
		return nil, WriteResult{}, toolError(err)
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, WriteResult{}, toolError(err)
	}
	gpath := api.GuestPath(in.Path)
	base := path.Base(gpath)
	if gpath == "~" || base == "/" || base == "." || base == ".." {
		return nil, WriteResult{}, toolError(invalid("path %q names a directory; give the file's path", in.Path))
	}
	tmp, err := os.MkdirTemp("", "banger-mcp-")
	if err != nil {
		return nil, WriteResult{}, toolError(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	src := filepath.Join(tmp, "f")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		return nil, WriteResult{}, toolError(err)
	}
	if err := os.Chmod(src, mode); err != nil { // past the umask
		return nil, WriteResult{}, toolError(err)
	}
	res, err := s.opts.Daemon.VMCopyTo(ctx, api.VMCopyRequest{Name: vm.Name, Path: gpath, BaseName: base}, src, agent.TreeSender{})
	if err != nil {
		return nil, WriteResult{}, toolError(err)
	}
	return nil, WriteResult{Path: res.Path, Bytes: int64(len(data))}, nil
}

// decodeWrite checks write_file's content, encoding and mode.
func (s *Server) decodeWrite(in WriteArgs) ([]byte, os.FileMode, error) {
	data := []byte(in.Content)
	switch in.Encoding {
	case "", "utf-8", "utf8", "text":
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, 0, invalid("content is not valid base64: %v", err)
		}
	default:
		return nil, 0, invalid("encoding %q: use utf-8 or base64", in.Encoding)
	}
	if int64(len(data)) > s.opts.Limits.FileBytes {
		return nil, 0, invalid("content is %d bytes; write_file takes at most %d (copy_in moves more)", len(data), s.opts.Limits.FileBytes)
	}
	mode := os.FileMode(0o644)
	if in.Mode != "" {
		m, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return nil, 0, invalid("mode %q: give permission bits in octal, such as 0644 or 0755", in.Mode)
		}
		mode = os.FileMode(m)
	}
	return data, mode, nil
}

func (s *Server) listDir(ctx context.Context, req *sdk.CallToolRequest, in ListDirArgs) (*sdk.CallToolResult, DirListing, error) {
	limit := defaultListEntries
	switch {
	case in.MaxEntries < 0 || in.MaxEntries > maxListEntries:
		return nil, DirListing{}, toolError(invalid("max_entries %d: use 1 to %d", in.MaxEntries, maxListEntries))
	case in.MaxEntries > 0:
		limit = in.MaxEntries
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, DirListing{}, toolError(err)
	}
	gpath := api.GuestPath(in.Path)
	// find's arguments never start with "-": "~" paths become "./..." in
	// the home directory (the default working directory).
	target := gpath
	if gpath == "~" {
		target = "."
	} else if rest, ok := strings.CutPrefix(gpath, "~/"); ok {
		target = "./" + rest
	}
	ereq := api.VMExecRequest{Name: vm.Name, Argv: []string{"find", target, "-mindepth", "1", "-maxdepth", "1", "-printf", `%y\t%s\t%m\t%T@\t%f\0`}}
	// A name is at most 255 bytes, so this bounds what a guest sends back.
	res, err := runCaptured(ctx, s.opts.Daemon, ereq, nil, time.Minute, (limit+1)*320)
	if err != nil {
		return nil, DirListing{}, toolError(err)
	}
	if res.ExitCode != 0 {
		msg := strings.TrimSpace(res.Stderr)
		if msg == "" {
			msg = fmt.Sprintf("find exited %d", res.ExitCode)
		}
		return nil, DirListing{}, toolError(invalid("cannot list %s: %s", gpath, msg))
	}
	out := DirListing{Path: gpath, Entries: parseFind(res.Stdout)}
	slices.SortFunc(out.Entries, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	if len(out.Entries) > limit || res.Truncated {
		out.Entries, out.Truncated = out.Entries[:min(limit, len(out.Entries))], true
	}
	return nil, out, nil
}

// parseFind reads find -printf '%y\t%s\t%m\t%T@\t%f\0' output; malformed
// records (a guest may send anything) are skipped.
func parseFind(text string) []DirEntry {
	entries := []DirEntry{}
	for _, rec := range strings.Split(text, "\x00") {
		f := strings.SplitN(rec, "\t", 5)
		if len(f) != 5 || f[4] == "" {
			continue
		}
		size, _ := strconv.ParseInt(f[1], 10, 64)
		secs, _ := strconv.ParseFloat(f[3], 64)
		entries = append(entries, DirEntry{
			Name: f[4], Type: findType(f[0]), Size: size, Mode: "0" + f[2],
			ModTime: time.Unix(int64(secs), 0).UTC().Format(time.RFC3339),
		})
	}
	return entries
}

func findType(y string) string {
	switch y {
	case "f":
		return "file"
	case "d":
		return "dir"
	case "l":
		return "symlink"
	}
	return "other"
}

func (s *Server) copyIn(ctx context.Context, req *sdk.CallToolRequest, in CopyArgs) (*sdk.CallToolResult, CopyResult, error) {
	src, err := s.root.existing(in.HostPath)
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	creq := api.VMCopyRequest{Name: vm.Name, Path: api.GuestPath(in.GuestPath), BaseName: filepath.Base(src)}
	// Symlinks inside the tree are sent as links, never followed, so
	// nothing outside the root leaves the host.
	res, err := s.opts.Daemon.VMCopyTo(ctx, creq, src, agent.TreeSender{})
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	return nil, copyResult(vm.Name+":"+res.Path, res), nil
}

func (s *Server) copyOut(ctx context.Context, req *sdk.CallToolRequest, in CopyArgs) (*sdk.CallToolResult, CopyResult, error) {
	gpath := api.GuestPath(in.GuestPath)
	dest, err := s.root.destination(in.HostPath, path.Base(gpath))
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	tr := agent.TreeReceiver{
		Umask: agent.ProcessUmask("/proc/self/status"), MaxBytes: s.opts.Limits.CopyBytes, MaxEntries: 1_000_000,
		CheckSpace: true, SpaceReserve: copyMinFree, IdleTimeout: copyIdleTimeout,
	}
	res, err := s.opts.Daemon.VMCopyFrom(ctx, api.VMCopyRequest{Name: vm.Name, Path: gpath, MaxBytes: tr.MaxBytes}, dest, tr)
	if err != nil {
		return nil, CopyResult{}, toolError(err)
	}
	return nil, copyResult(dest, res), nil
}

func copyResult(dest string, r agent.CopyResult) CopyResult {
	return CopyResult{Destination: dest, Files: r.Files, Dirs: r.Dirs, Symlinks: r.Links, Bytes: int64(r.Bytes), Skipped: r.Skipped}
}
