// Command crashd is bangerd for crash tests, never shipped: it SIGKILLs
// itself when the VM lifecycle reaches the step named by
// BANGER_TEST_CRASH_AT (one of the lifecycle.Crash* names), once: it first creates
// the file BANGER_TEST_CRASH_MARK, and a daemon that finds it there does
// not crash, so the restarted daemon can be checked. The release bangerd
// has no such hook; only this test main sets daemon.Options.CrashPoint.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/banger-dev/banger/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	at, mark := os.Getenv("BANGER_TEST_CRASH_AT"), os.Getenv("BANGER_TEST_CRASH_MARK")
	code := daemon.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, func(o *daemon.Options) {
		o.CrashPoint = func(step string) {
			if step != at || mark == "" {
				return
			}
			f, err := os.OpenFile(mark, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return // crashed here before: this is the daemon after the restart
			}
			_ = f.Close()
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	})
	stop()
	os.Exit(code)
}
