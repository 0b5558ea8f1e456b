package disk

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestExecRunner(t *testing.T) {
	needCmd(t, "sh")
	ctx := context.Background()
	r := ExecRunner{}
	out, err := r.Run(ctx, Command{Name: "sh", Args: []string{"-c", `read x; echo "$x $BANGER_X"`},
		Env: []string{"BANGER_X=env"}, Stdin: strings.NewReader("stdin\n")})
	if err != nil || strings.TrimSpace(string(out)) != "stdin env" {
		t.Fatalf("out %q, err %v", out, err)
	}
	_, err = r.Run(ctx, Command{Name: "sh", Args: []string{"-c", "echo I: step one; echo I: step two; echo 'E: the real cause' >&2; exit 3"}})
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 3 {
		t.Fatalf("err = %v, want a CommandError with status 3", err)
	}
	if err.Error() != "sh exited with status 3: E: the real cause" {
		t.Fatalf("error %q should name the program and the cause only", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := r.Run(ctx, Command{Name: "sleep", Args: []string{"10"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("canceled command: %v", err)
	}
	if _, err := r.Run(context.Background(), Command{Name: "banger-no-such-tool"}); err == nil || !strings.Contains(err.Error(), "banger-no-such-tool") {
		t.Fatalf("missing tool: %v", err)
	}
}
