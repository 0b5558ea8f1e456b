package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/mcp"
)

// mcpOptions is one `banger mcp`.
type mcpOptions struct {
	All       bool
	HTTP      string
	Root      string
	AgentName string
}

func newMCPCmd(app *App, g *globalFlags) *cobra.Command {
	var o mcpOptions
	cmd := &cobra.Command{
		Use:   "mcp [--all] [--http ADDR|unix:PATH] [--root DIR]",
		Short: "Serve banger to a coding agent over the Model Context Protocol",
		Long: `Run an MCP server that gives an agent (Claude Code, Claude Desktop, Cursor, ...)
tools to create microVMs, run commands in them, read, write and copy files, and
delete them. It speaks MCP on stdin/stdout (what MCP clients start), or with
--http streamable HTTP on a unix socket (unix:PATH, mode 0600) or a loopback
port (there is no authentication, so other addresses are refused).

The agent sees and touches only the VMs it created: they carry the label
creator=mcp:<agent> (--agent-name, else the session's ID), and any other VM is
reported as missing. --all lifts that. copy_in reads and copy_out writes only
under --root (default: the working directory); paths leading out of it, by
".." or through a symlink, are refused.`,
		Example: `  banger mcp
  banger mcp --agent-name claude --root ~/src/project
  banger mcp --http unix:/run/user/1000/banger-mcp.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.runMCP(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.All, "all", false, "let the agent reach every VM, not only the ones it created")
	f.StringVar(&o.HTTP, "http", "", "serve streamable HTTP on unix:PATH or a loopback HOST:PORT instead of stdio")
	f.StringVar(&o.Root, "root", "", "the host directory copy_in and copy_out may use (default: the working directory)")
	f.StringVar(&o.AgentName, "agent-name", "", "name the agent in its VMs' creator label, so a restarted agent keeps its VMs (default: the session's ID)")
	return cmd
}

func (app *App) runMCP(ctx context.Context, g *globalFlags, o mcpOptions) error {
	if o.AgentName != "" && !validAgentName(o.AgentName) {
		return fmt.Errorf("--agent-name %q: use 1-64 letters, digits and . _ -", o.AgentName)
	}
	listen, err := mcpListener(o.HTTP)
	if err != nil {
		return err
	}
	c, _, err := app.connect(ctx, g)
	if err != nil {
		if listen != nil {
			_ = listen.Close()
		}
		return err
	}
	defer c.Close()
	srv, err := mcp.New(mcp.Options{Daemon: c, All: o.All, AgentName: o.AgentName, Root: o.Root, Version: app.Build.Version})
	if err != nil {
		return err
	}
	if listen == nil {
		err := srv.Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(app.Stdin), Writer: nopWriteCloser{app.Stdout}})
		if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	fmt.Fprintf(app.Stderr, "banger: MCP server listening on %s\n", listen.Addr())
	hs := &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(listen); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// agentNamePattern is what --agent-name takes: it ends up in a label value.
var agentNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func validAgentName(s string) bool { return agentNamePattern.MatchString(s) }

// mcpListener opens what --http names: nil for stdio, a 0600 unix socket
// for unix:PATH, or a loopback TCP port. The HTTP transport has no
// authentication, so anything reachable from another machine is refused.
func mcpListener(spec string) (net.Listener, error) {
	if spec == "" {
		return nil, nil
	}
	if path, ok := strings.CutPrefix(spec, "unix:"); ok {
		if path == "" {
			return nil, errors.New("--http unix: needs a socket path, e.g. unix:/run/user/1000/banger-mcp.sock")
		}
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path) // a stale socket of an earlier run
		}
		// Created 0600 from the start: umask, not a chmod after the fact.
		old := unix.Umask(0o177)
		l, err := net.Listen("unix", path)
		unix.Umask(old)
		if err != nil {
			return nil, fmt.Errorf("--http %s: %w", spec, err)
		}
		return l, nil
	}
	host, _, err := net.SplitHostPort(spec)
	if err != nil {
		return nil, fmt.Errorf("--http %q: give unix:PATH or HOST:PORT (%v)", spec, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--http %q: the MCP HTTP transport has no authentication, so it listens only on loopback (127.0.0.1:PORT) or a unix socket", spec)
	}
	l, err := net.Listen("tcp", spec)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", spec, err)
	}
	return l, nil
}
