// Package updatertest builds signed releases and serves them over local
// HTTPS for tests of `banger update`: a throwaway ECDSA P-256 key that
// signs the way `cosign sign-blob --key` does, tarball builders that can
// produce every malformed archive the stager must refuse, a release server
// with fault injection, and a fake Runner that "executes" a fake binary by
// reading what it is, or runs a Script for real.
package updatertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
)

// Key is a throwaway release signing key.
type Key struct {
	Private *ecdsa.PrivateKey
	// Public is the public key as base64 PKIX DER (the -ldflags form).
	Public string
	// PublicPEM is the same key as cosign.pub holds it.
	PublicPEM string
}

// NewKey generates a P-256 key.
func NewKey(t testing.TB) Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return Key{
		Private:   priv,
		Public:    base64.StdEncoding.EncodeToString(der),
		PublicPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}
}

// Sign returns data's signature in cosign sign-blob format: base64 of the
// ASN.1 DER ECDSA signature over SHA-256(data).
func (k Key) Sign(t testing.TB, data []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(data)
	der, err := ecdsa.SignASN1(rand.Reader, k.Private, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(der))
}

// Entry is one tar entry. Size, when non-zero, overrides the header size
// (for oversize claims); Type defaults to a regular file.
type Entry struct {
	Name     string
	Body     []byte
	Type     byte
	Mode     int64
	Size     int64
	Linkname string
}

// FakeBinary is the content of a fake binary: the fake Runner reads it to
// know what it is "executing".
func FakeBinary(name, version string) []byte {
	return []byte(fmt.Sprintf("fake %s %s\n", name, version))
}

// Binaries are the three entries of a well-formed release.
func Binaries(version string) []Entry {
	return []Entry{
		{Name: "banger", Body: FakeBinary("banger", version), Mode: 0o644},
		{Name: "bangerd", Body: FakeBinary("bangerd", version), Mode: 0o600},
		{Name: "banger-vsock-agent", Body: FakeBinary("banger-vsock-agent", version), Mode: 0o777},
	}
}

// Tar writes entries as an uncompressed tar stream. An entry whose Size
// overrides its body leaves the stream deliberately unfinished.
func Tar(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Typeflag: e.Type, Linkname: e.Linkname, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if e.Size != 0 {
			h.Size = e.Size
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.Size != 0 && e.Size != int64(len(e.Body)) {
			// The header promised more than we write: stop here.
			return buf.Bytes()
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Gzip compresses data.
func Gzip(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Tarball is Gzip(Tar(entries)).
func Tarball(t testing.TB, entries []Entry) []byte { return Gzip(t, Tar(t, entries)) }

// SHA256 is data's lowercase hex SHA-256.
func SHA256(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// Server is a release server on local HTTPS.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	handlers map[string]http.HandlerFunc
	hits     map[string]int
}

// NewServer starts a release server; it stops when the test ends.
func NewServer(t testing.TB) *Server {
	s := &Server{files: map[string][]byte{}, handlers: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.URL.Path]++
	h, hok := s.handlers[r.URL.Path]
	data, ok := s.files[r.URL.Path]
	s.mu.Unlock()
	switch {
	case hok:
		h(w, r)
	case ok:
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data)
	default:
		http.NotFound(w, r)
	}
}

// Set serves data at path (e.g. "/v0.2.0/SHA256SUMS").
func (s *Server) Set(path string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = data
}

// Get returns what path serves.
func (s *Server) Get(path string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[path]
}

// Handle overrides path with h, for faults mid-stream.
func (s *Server) Handle(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[path] = h
}

// Hits is how many requests path received.
func (s *Server) Hits(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// Release describes one release to publish.
type Release struct {
	Version string
	Arch    string
	// Tarball defaults to Tarball(Binaries(Version)).
	Tarball []byte
	// Channel, when set, is pointed at Version.
	Channel       string
	MinCompatible string
	// Key signs SHA256SUMS.
	Key Key
}

// TarballName mirrors updater.TarballName (not imported, so the test
// catches a change of naming on either side).
func TarballName(version, arch string) string {
	return "banger_" + strings.TrimPrefix(version, "v") + "_linux_" + arch + ".tar.gz"
}

// Publish serves r: the tarball, SHA256SUMS listing it, the signature and
// an updated manifest.json. It returns the tarball's name.
func (s *Server) Publish(t testing.TB, r Release) string {
	t.Helper()
	if r.Tarball == nil {
		r.Tarball = Tarball(t, Binaries(r.Version))
	}
	name := TarballName(r.Version, r.Arch)
	sums := fmt.Sprintf("%s  %s\n", SHA256(r.Tarball), name)
	dir := "/" + r.Version + "/"
	s.Set(dir+name, r.Tarball)
	s.Set(dir+"SHA256SUMS", []byte(sums))
	s.Set(dir+"SHA256SUMS.sig", r.Key.Sign(t, []byte(sums)))

	m := map[string]any{"schema": 1, "channels": map[string]any{}, "releases": map[string]any{}}
	if old := s.Get("/manifest.json"); old != nil {
		if err := json.Unmarshal(old, &m); err != nil {
			t.Fatal(err)
		}
	}
	rel := map[string]any{"published_at": "2026-05-01T12:00:00Z", "tarballs": map[string]string{r.Arch: name}}
	if r.MinCompatible != "" {
		rel["min_compatible_version"] = r.MinCompatible
	}
	m["releases"].(map[string]any)[r.Version] = rel
	if r.Channel != "" {
		m["channels"].(map[string]any)[r.Channel] = r.Version
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	s.Set("/manifest.json", data)
	return name
}

// Script is a staged "binary" that really runs: a shell script with body.
// Runner hands it to a real system.ExecRunner, so tests reach the real
// process handling with binaries that hang, flood their output or leave
// children behind.
func Script(body string) []byte {
	return []byte("#!/bin/sh\n" + body + "\n")
}

// Runner is a fake system.Runner. It "executes" a fake binary by reading
// the file at the command's path (FakeBinary content), so a test sees
// exactly which file ran, and answers like banger would; a Script runs for
// real through Exec; systemctl always succeeds unless told otherwise.
type Runner struct {
	mu    sync.Mutex
	calls []system.Command
	// SchemaExit is what `bangerd --check-migrations` exits with.
	SchemaExit int
	// Doctor answers `banger doctor` for the given installed version; nil
	// means every check passes.
	Doctor func(version string) (failing []string)
	// Systemctl, when set, answers systemctl commands.
	Systemctl func(args []string) (system.Output, error)
	// VersionOverride, when set, is what the staged banger claims to be.
	VersionOverride string
	// Exec runs Scripts (system.ExecRunner{} when nil).
	Exec system.Runner
}

// Calls returns every command run so far, in order.
func (r *Runner) Calls() []system.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// CallLines renders Calls as "base-name args..." lines.
func (r *Runner) CallLines() []string {
	var out []string
	for _, c := range r.Calls() {
		out = append(out, strings.Join(append([]string{filepath.Base(c.Path)}, c.Args...), " "))
	}
	return out
}

// Run implements system.Runner.
func (r *Runner) Run(ctx context.Context, c system.Command) (system.Output, error) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return system.Output{}, err
	}
	if c.Path == "systemctl" {
		if r.Systemctl != nil {
			return r.Systemctl(c.Args)
		}
		return system.Output{}, nil
	}
	data, err := os.ReadFile(c.Path)
	if err != nil {
		return system.Output{}, fmt.Errorf("run %s: %w", c.Path, err)
	}
	if bytes.HasPrefix(data, []byte("#!")) {
		if r.Exec != nil {
			return r.Exec.Run(ctx, c)
		}
		return system.ExecRunner{}.Run(ctx, c)
	}
	var name, version string
	if _, err := fmt.Sscanf(string(data), "fake %s %s", &name, &version); err != nil {
		return system.Output{}, fmt.Errorf("run %s: not a fake binary", c.Path)
	}
	args := strings.Join(c.Args, " ")
	switch {
	case name == "banger" && args == "version --json":
		if r.VersionOverride != "" {
			version = r.VersionOverride
		}
		out, _ := json.Marshal(map[string]string{"version": version, "commit": "commit-" + version, "built_at": "2026-05-01T12:00:00Z"})
		return system.Output{Stdout: out}, nil
	case name == "bangerd" && args == "--check-migrations --system":
		lines := map[int]string{0: "compatible: 3 migrations applied", 1: "migrations needed: pending [4] (binary will apply on first Open)",
			2: "incompatible: database has unknown migrations [9] (written by a newer banger)"}
		return system.Output{Stdout: []byte(lines[r.SchemaExit] + "\n"), ExitCode: r.SchemaExit}, nil
	case name == "banger" && args == "doctor --system --json":
		var failing []string
		if r.Doctor != nil {
			failing = r.Doctor(version)
		}
		type res struct {
			Name    string `json:"name"`
			Status  string `json:"status"`
			Summary string `json:"summary"`
		}
		rep := struct {
			Results []res `json:"results"`
		}{Results: []res{{Name: "banger version", Status: "PASS", Summary: version}}}
		for _, f := range failing {
			rep.Results = append(rep.Results, res{Name: f, Status: "FAIL", Summary: "broken"})
		}
		out, _ := json.Marshal(rep)
		code := 0
		if len(failing) > 0 {
			code = 1
		}
		return system.Output{Stdout: out, ExitCode: code}, nil
	}
	return system.Output{Stderr: []byte("unknown command"), ExitCode: 64}, nil
}

// Snapshot records every path under root with its type, mode and content
// (symlink targets for links), to prove a refused update changed nothing.
func Snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		entry := info.Mode().String()
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += " " + SHA256(data)
		case info.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			entry += " -> " + target
		}
		snap[rel] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// DiffSnapshots lists what differs between two snapshots, sorted.
func DiffSnapshots(before, after map[string]string) []string {
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if a, ok := after[k]; !ok {
			diff = append(diff, "removed "+k)
		} else if a != before[k] {
			diff = append(diff, fmt.Sprintf("changed %s: %s -> %s", k, before[k], a))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[k]; !ok {
			diff = append(diff, "added "+k)
		}
	}
	return diff
}

// Install lays out a system install of version under root, as `banger
// system install` would: the three fake binaries at their canonical paths
// (mirrored here, not imported, so a change of layout shows in tests) and
// install.toml. It returns the metadata written.
func Install(t testing.TB, root, version string) installmeta.Meta {
	t.Helper()
	for rel, name := range map[string]string{
		"usr/local/bin/banger":                    "banger",
		"usr/local/bin/bangerd":                   "bangerd",
		"usr/local/lib/banger/banger-vsock-agent": "banger-vsock-agent",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, FakeBinary(name, version), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := installmeta.Meta{Version: version, Commit: "commit-" + version, BuiltAt: "2026-01-01T00:00:00Z",
		OwnerUser: "dev", OwnerUID: 1000, OwnerGID: 1000, Home: "/home/dev", InstalledAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := installmeta.Write(paths.System(root).InstallMetaPath(), m); err != nil {
		t.Fatal(err)
	}
	return m
}
