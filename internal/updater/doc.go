// Package updater installs a newer banger release over a system install,
// such that nothing unverified ever runs and a failure at any step leaves
// the previous install working.
//
// The chain of trust: SHA256SUMS is signed (cosign sign-blob format) with
// the release key whose public half is embedded in this binary at build
// time; the signature is checked before SHA256SUMS is parsed; the tarball
// is hashed while it streams and must match its line in SHA256SUMS; the
// tarball must hold exactly banger, bangerd and banger-vsock-agent as plain
// files. Only then does anything from the release run: the staged banger
// reports its version and the staged bangerd classifies the state database.
// The swap replaces each binary atomically with a .previous backup, in the
// order vsock-agent → bangerd → banger, and every later failure (restart,
// doctor) rolls all of it back.
package updater
