// Command hostileagent is a lying guest agent for tests: the fake
// Firecracker hosts it in place of banger-vsock-agent
// (BANGER_FAKE_GUEST=path/to/hostileagent), and it behaves as the JSON
// agenttest.Behaviour in $BANGER_HOSTILE_AGENT says (see package
// internal/agent/agenttest).
//
//	hostileagent --listen unix:PATH
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/agent/agenttest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostileagent:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "", "address to listen on (unix:PATH or vsock:PORT)")
	flag.Parse()
	if *listen == "" {
		return fmt.Errorf("--listen is required")
	}
	var b agenttest.Behaviour
	if spec := os.Getenv(agenttest.EnvBehaviour); spec != "" {
		if err := json.Unmarshal([]byte(spec), &b); err != nil {
			return fmt.Errorf("%s is not a valid behaviour: %w", agenttest.EnvBehaviour, err)
		}
	}
	ln, err := agent.Listen(*listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("hostileagent: listening on %s\n", *listen)
	return b.Serve(ctx, ln)
}
