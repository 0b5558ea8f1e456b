package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// rejectUnknownSubcommands makes every command that groups others (banger,
// banger vm, banger image, ...) fail on a word it does not know, with the
// nearest commands as suggestions. Cobra otherwise prints a group's help and
// exits 0 for `banger vm craete`, which a script reads as success.
func rejectUnknownSubcommands(cmd *cobra.Command) {
	if cmd.HasSubCommands() {
		cmd.Args = knownSubcommand
		// Two edits reach a swapped pair of letters (craete → create).
		cmd.SuggestionsMinimumDistance = 2
		// `banger vm craete --name dev` fails on the flag before the
		// argument is looked at; the unknown word is the real mistake.
		cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
			if args := c.Flags().Args(); c.HasSubCommands() && len(args) > 0 {
				return unknownCommandError(c, args[0])
			}
			return err
		})
		if cmd.Run == nil && cmd.RunE == nil {
			cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		}
	}
	for _, sub := range cmd.Commands() {
		rejectUnknownSubcommands(sub)
	}
}

// knownSubcommand is the Args check of a group: reaching it with an
// argument means no subcommand matched that word.
func knownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return unknownCommandError(cmd, args[0])
}

// unknownCommandError is one sentence naming the word, the group and the
// nearest commands (or where to find the list).
func unknownCommandError(cmd *cobra.Command, word string) error {
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		return fmt.Errorf("%s; did you mean %s?", msg, orList(s))
	}
	return fmt.Errorf("%s; `%s --help` lists its commands", msg, cmd.CommandPath())
}

// orList joins words as "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
