package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Firecracker's fault messages for the pre-/post-boot rules, word for word
// (VmmActionError::OperationNotSupportedPostBoot / PreBoot).
const (
	msgNotAfterBoot  = "The requested operation is not supported after starting the microVM."
	msgNotBeforeBoot = "The requested operation is not supported before starting the microVM."
)

// fault is an API failure. Firecracker answers every VMM and parsing error
// with 400 Bad Request and {"fault_message": "..."}; so does the fake.
type fault struct{ msg string }

func (f *fault) Error() string { return f.msg }

func faultf(format string, args ...any) error {
	return &fault{msg: fmt.Sprintf(format, args...)}
}

// notImplemented marks API calls the spec allows but the fake does not model.
// They fail loudly instead of pretending, so a test that starts depending on
// one shows exactly what to add here.
func notImplemented(method, path string) error {
	return faultf("fake-firecracker does not implement %s %s; extend test/fakefirecracker if banger needs it", method, path)
}

// osError renders err the way Firecracker's fault messages show an OS error:
// Rust's io::Error Display, "<strerror> (os error N)". Firecracker is built
// against musl, whose strerror differs from glibc for a few errnos.
func osError(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	text := errno.Error()
	switch errno {
	case syscall.EADDRINUSE:
		text = "Address in use"
	default:
		text = strings.ToUpper(text[:1]) + text[1:]
	}
	return fmt.Sprintf("%s (os error %d)", text, int(errno))
}
