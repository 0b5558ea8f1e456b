package api

import (
	"errors"
	"strings"
)

// CommandNotFoundCode is what a shell exits with for a command it cannot
// find; exec clients report a missing command with it.
const CommandNotFoundCode = 127

// IsCommandNotFound reports whether err is vm.exec refusing a command the
// guest does not have.
func IsCommandNotFound(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Code == CodeNotFound && strings.Contains(ae.Message, "command not found")
}
