package daemon

import (
	"math"
	"regexp"
	"strings"
)

// decisiveConsoleLine matches console lines that say why a boot failed.
// A kernel panic is followed by a register dump and a call trace that push
// its reason out of any short tail, so these lines are kept wherever they
// are in the log's last window.
var decisiveConsoleLine = regexp.MustCompile(strings.Join([]string{
	`Kernel panic`,
	`not syncing`,
	`VFS: Unable to mount root fs`,
	`VFS: Cannot open root device`,
	`No working init found`,
	`No init found`,
	`Failed to execute /init`,
	`Run /init as init process.*failed`,
	`(?i)can(not|'t) find root device`,
	`Gave up waiting for root`,
	`ALERT! .* does not exist`,
	// banger's own initrd (image/initrd/init.sh) says why it gave up.
	`banger-initrd: .*(failed|cannot|did not|does not exist)`,
}, "|"))

const (
	// consoleTailLines is how many last lines a boot error always quotes.
	consoleTailLines = 8
	// maxDecisiveLines bounds the decisive lines quoted from before the tail.
	maxDecisiveLines = 6
	// maxConsoleLineRunes cuts each quoted line: the guest writes them.
	maxConsoleLineRunes = 200
)

// bootConsoleExcerpt is the part of a VM's serial console a boot error
// quotes: the decisive lines (bootConsoleLines) from the log's last 256
// KiB. "" when the log is empty or unreadable.
func bootConsoleExcerpt(path string) string {
	return bootConsoleLines(tailFile(path, math.MaxInt))
}

// bootConsoleLines picks from a console log the lines that explain a failed
// boot: the last decisive lines (panic reasons, missing root or init) that
// fall before the tail, then the last consoleTailLines lines, with "…"
// where lines were skipped. The result is bounded in lines and length.
func bootConsoleLines(log string) string {
	all := strings.Split(strings.TrimRight(strings.ReplaceAll(log, "\r\n", "\n"), "\n"), "\n")
	if len(all) == 1 && strings.TrimSpace(all[0]) == "" {
		return ""
	}
	tailStart := max(0, len(all)-consoleTailLines)
	var picked []int
	for i := tailStart - 1; i >= 0 && len(picked) < maxDecisiveLines; i-- {
		if decisiveConsoleLine.MatchString(all[i]) {
			picked = append(picked, i)
		}
	}
	var b strings.Builder
	next := 0 // the line after the last one written
	write := func(i int) {
		if i > next {
			b.WriteString("…\n")
		}
		b.WriteString(cutLine(all[i]))
		b.WriteByte('\n')
		next = i + 1
	}
	for k := len(picked) - 1; k >= 0; k-- {
		write(picked[k])
	}
	for i := tailStart; i < len(all); i++ {
		write(i)
	}
	return b.String()
}

// cutLine bounds one console line, dropping a stray carriage return.
func cutLine(s string) string {
	s = strings.TrimRight(s, "\r")
	if r := []rune(s); len(r) > maxConsoleLineRunes {
		return string(r[:maxConsoleLineRunes]) + "…"
	}
	return s
}
