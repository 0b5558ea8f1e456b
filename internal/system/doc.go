// Package system holds the small set of operations banger performs on the
// host's own files and processes as root: replacing installed binaries
// atomically with a backup, writing small files atomically, and running
// external commands through one Runner that tests replace with a fake.
package system
