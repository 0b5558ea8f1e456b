package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBootConsoleLinesKeepsThePanicReason(t *testing.T) {
	// Debian's modular kernel imported without an initrd: the reason is
	// 15 lines above the end, behind the call trace.
	got := bootConsoleExcerpt(filepath.Join("testdata", "console-vfs-panic.log"))
	want := `…
[    0.601500] VFS: Cannot open root device "vda" or unknown-block(0,0): error -6
…
[    0.602000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
…
[    0.603200]  prepare_namespace+0x136/0x165
[    0.603300]  kernel_init_freeable+0x25c/0x286
[    0.603400]  ? rest_init+0xd0/0xd0
[    0.603500]  kernel_init+0x16/0x130
[    0.603600]  ret_from_fork+0x22/0x30
[    0.603700]  </TASK>
[    0.603800] Kernel Offset: 0x2a000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
[    0.603900] Rebooting in 1 seconds..
`
	if got != want {
		t.Errorf("excerpt:\n%s\nwant:\n%s", got, want)
	}
}

func TestBootConsoleLinesKeepsTheInitrdReason(t *testing.T) {
	got := bootConsoleExcerpt(filepath.Join("testdata", "console-initrd-noroot.log"))
	for _, line := range []string{
		"banger-initrd: loading virtio_blk failed: insmod: can't insert 'virtio_blk.ko': invalid module format",
		"banger-initrd: root device /dev/vda did not appear within 10s",
		"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
		"Kernel Offset: 0x1c400000", // the tail
	} {
		if !strings.Contains(got, line) {
			t.Errorf("excerpt lacks %q:\n%s", line, got)
		}
	}
	for _, noise := range []string{"banger-initrd: loading ext4\n", "Linux version", "Hardware name"} {
		if strings.Contains(got, noise) {
			t.Errorf("excerpt quotes %q, which explains nothing:\n%s", noise, got)
		}
	}
}

func TestBootConsoleLinesShortAndEmptyLogs(t *testing.T) {
	// A guest that booted but whose agent never answered: only the tail.
	short := "[    0.1] Linux version 6.1\r\n[    2.0] Run /init as init process\r\nWelcome\r\n"
	if got, want := bootConsoleLines(short), "[    0.1] Linux version 6.1\n[    2.0] Run /init as init process\nWelcome\n"; got != want {
		t.Errorf("short log: got %q, want %q", got, want)
	}
	for _, empty := range []string{"", "\n", "\r\n"} {
		if got := bootConsoleLines(empty); got != "" {
			t.Errorf("bootConsoleLines(%q) = %q, want empty", empty, got)
		}
	}
	if got := bootConsoleExcerpt(filepath.Join(t.TempDir(), "missing.log")); got != "" {
		t.Errorf("a missing log gave %q", got)
	}
}

func TestBootConsoleLinesIsBounded(t *testing.T) {
	// A hostile or broken guest: a panic line on every line, each very long.
	line := "Kernel panic - not syncing: " + strings.Repeat("x", 5000) + "\n"
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte(strings.Repeat(line, 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	got := bootConsoleExcerpt(path)
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if n := len(lines); n > maxDecisiveLines+consoleTailLines+2 {
		t.Errorf("%d lines quoted, want at most %d", n, maxDecisiveLines+consoleTailLines+2)
	}
	if len(got) > 4<<10 {
		t.Errorf("excerpt is %d bytes, want at most 4 KiB", len(got))
	}
}
