package agent

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agent channel's hot paths over a unix socket standing in for vsock:
//
//	go test -run '^$' -bench . -benchtime 200x ./internal/agent
//
// BANGER_BENCH_DIR puts the copy benchmarks' files somewhere else (a tmpfs
// measures the protocol rather than the disk). docs/performance.md has the
// numbers and the ssh comparison (ssh_bench_test.go).

// BenchmarkExecTrue is one exec round trip of `true` on an open session:
// stream open, request, fork/exec, exit status back.
func BenchmarkExecTrue(b *testing.B) {
	c := newClient(b, startServer(b, &Server{}))
	ctx := testCtx(b)
	req := ExecRequest{Argv: []string{"true"}, Dir: "/"}
	b.ResetTimer()
	for b.Loop() {
		st, err := c.Run(ctx, req, nil, io.Discard, io.Discard)
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
	}
}

// BenchmarkHealth is the protocol alone: one unary call, no process.
func BenchmarkHealth(b *testing.B) {
	c := newClient(b, startServer(b, &Server{}))
	ctx := testCtx(b)
	for b.Loop() {
		if _, err := c.Health(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

const benchFileSize = 256 << 20

func benchDir(b *testing.B) string {
	if d := os.Getenv("BANGER_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "agent-bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func benchFile(b *testing.B, dir string) string {
	p := filepath.Join(dir, "src.bin")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	chunk := []byte(strings.Repeat("banger copy benchmark data\n", 40000))
	for n := 0; n < benchFileSize; n += len(chunk) {
		if _, err := f.Write(chunk[:min(len(chunk), benchFileSize-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkCopyPut is host → guest throughput for one 256 MiB file.
func BenchmarkCopyPut(b *testing.B) {
	dir := benchDir(b)
	src := benchFile(b, dir)
	c := newClient(b, startServer(b, &Server{}))
	ctx := testCtx(b)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for b.Loop() {
		res, err := c.Put(ctx, PutRequest{Path: filepath.Join(dir, "dst.bin")}, src, TreeSender{})
		if err != nil || res.Bytes != benchFileSize {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkCopyGet is guest → host throughput for one 256 MiB file.
func BenchmarkCopyGet(b *testing.B) {
	dir := benchDir(b)
	src := benchFile(b, dir)
	c := newClient(b, startServer(b, &Server{}))
	ctx := testCtx(b)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for b.Loop() {
		res, err := c.Get(ctx, GetRequest{Path: src}, filepath.Join(dir, "back.bin"), TreeReceiver{})
		if err != nil || res.Bytes != benchFileSize {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkExecStdout is process output throughput: 256 MiB from head(1).
func BenchmarkExecStdout(b *testing.B) {
	c := newClient(b, startServer(b, &Server{}))
	ctx := testCtx(b)
	b.SetBytes(benchFileSize)
	req := ExecRequest{Argv: []string{"head", "-c", "268435456", "/dev/zero"}}
	for b.Loop() {
		st, err := c.Run(ctx, req, nil, io.Discard, io.Discard)
		if err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
	}
}
