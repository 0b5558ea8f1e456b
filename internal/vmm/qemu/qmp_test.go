package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scriptedQMP serves one QMP connection: it sends greeting, then for each
// request line calls answer, which returns the raw lines to send back.
func scriptedQMP(t *testing.T, greeting string, answer func(req map[string]any) []string) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte(greeting + "\r\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req map[string]any
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				return
			}
			for _, l := range answer(req) {
				if _, err := c.Write([]byte(l + "\r\n")); err != nil {
					return
				}
			}
		}
	}()
	return path
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

func idOf(req map[string]any) string {
	b, _ := json.Marshal(req["id"])
	return string(b)
}

func TestQMPClientSkipsEventsAndStaleReplies(t *testing.T) {
	var cmds []string
	path := scriptedQMP(t, greeting, func(req map[string]any) []string {
		cmd := req["execute"].(string)
		cmds = append(cmds, cmd)
		id := idOf(req)
		switch cmd {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": ` + id + `}`}
		case "stop":
			return []string{
				`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`,
				`{"return": {"status": "stale"}, "id": 999}`,
				`{"return": {}, "id": ` + id + `}`,
			}
		case "query-status":
			return []string{`{"return": {"status": "paused", "singlestep": false, "running": false}, "id": ` + id + `}`}
		case "cont":
			return []string{`{"error": {"class": "GenericError", "desc": "Resetting the Virtual Machine is required"}, "id": ` + id + `}`}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if got := c.Version.String(); got != "7.2.22" || c.Version.Package != "Debian 1:7.2+dfsg-7+deb12u18+b3" {
		t.Errorf("version %s %q", got, c.Version.Package)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != "paused" || st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	err = c.Cont(ctx)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || err.Error() != "qmp cont: Resetting the Virtual Machine is required (GenericError)" {
		t.Fatalf("Cont error = %v", err)
	}
	if strings.Join(cmds, ",") != "qmp_capabilities,stop,query-status,cont" {
		t.Errorf("commands sent: %v", cmds)
	}
}

func TestQMPClientErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("not qmp", func(t *testing.T) {
		path := scriptedQMP(t, "SSH-2.0-OpenSSH", nil)
		if _, err := DialQMP(ctx, path); err == nil || !strings.Contains(err.Error(), "is not one") {
			t.Fatalf("DialQMP = %v", err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		if _, err := DialQMP(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
			t.Fatal("DialQMP to a missing socket succeeded")
		}
	})
	t.Run("silent server times out and breaks the client", func(t *testing.T) {
		path := scriptedQMP(t, greeting, func(req map[string]any) []string {
			if req["execute"] == "qmp_capabilities" {
				return []string{`{"return": {}, "id": ` + idOf(req) + `}`}
			}
			return nil
		})
		c, err := DialQMP(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer scancel()
		if _, err := c.QueryStatus(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("QueryStatus on a silent server = %v, want deadline exceeded", err)
		}
		if _, err := c.QueryStatus(ctx); err == nil || !strings.Contains(err.Error(), "unusable after an earlier error") {
			t.Fatalf("second QueryStatus = %v", err)
		}
	})
	t.Run("quit with a garbage reply fails", func(t *testing.T) {
		path := scriptedQMP(t, greeting, func(req map[string]any) []string {
			if req["execute"] == "qmp_capabilities" {
				return []string{`{"return": {}, "id": ` + idOf(req) + `}`}
			}
			return []string{"\x00"}
		})
		c, err := DialQMP(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		// A reply that is garbage is still an error: only a hang-up is
		// what quit is expected to cause.
		if err := c.Quit(ctx); err == nil {
			t.Fatal("Quit accepted a garbage reply")
		}
	})
	t.Run("quit hang-up", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "q.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(greeting + "\n"))
			r := bufio.NewReader(c)
			line, _ := r.ReadBytes('\n')
			var req map[string]any
			_ = json.Unmarshal(line, &req)
			_, _ = c.Write([]byte(`{"return": {}, "id": ` + idOf(req) + "}\n"))
			_, _ = r.ReadBytes('\n') // quit
			c.Close()
		}()
		c, err := DialQMP(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		if err := c.Quit(ctx); err != nil {
			t.Fatalf("Quit with a hang-up = %v", err)
		}
	})
}
