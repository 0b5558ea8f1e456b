package api

import "strings"

// GuestPath turns a user's guest path into the form the agent takes: ""
// and "~" are the guest user's home, absolute and "~/..." paths stay, and
// anything else is relative to the home, as with scp.
func GuestPath(p string) string {
	switch {
	case p == "" || p == "~":
		return "~"
	case strings.HasPrefix(p, "/"), strings.HasPrefix(p, "~/"):
		return p
	default:
		return "~/" + p
	}
}
