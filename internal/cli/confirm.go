package cli

import (
	"bufio"
	"fmt"
	"strings"
)

// confirmation is a y/N question before something that cannot be undone.
type confirmation struct {
	// Given is true when the --force or --yes flag (Flag) already said yes.
	Given bool
	Flag  string
	// Action completes "refusing to ... without confirmation".
	Action   string
	Question string
	// Declined is printed when the answer is no.
	Declined string
}

// confirm asks c.Question on stderr and reads y/N from stdin unless the flag
// was given. Without a terminal there is no one to ask, so it refuses and
// names the flag; a "no" exits 1.
func (app *App) confirm(c confirmation) error {
	if c.Given {
		return nil
	}
	if !app.IsTerminal() {
		return fmt.Errorf("refusing to %s without confirmation: stdin is not a terminal; pass %s", c.Action, c.Flag)
	}
	fmt.Fprintf(app.Stderr, "%s [y/N] ", c.Question)
	answer, _ := bufio.NewReader(app.Stdin).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		fmt.Fprintln(app.Stderr, c.Declined)
		return exitError{code: 1}
	}
	return nil
}
