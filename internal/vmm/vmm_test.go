package vmm

import "testing"

func TestExitStatusSaysWhatIsKnown(t *testing.T) {
	for _, tt := range []struct {
		st    ExitStatus
		text  string
		clean bool
	}{
		{ExitStatus{Code: 0}, "exited with code 0", true},
		{ExitStatus{Code: 3}, "exited with code 3", false},
		{ExitStatus{Code: -1, Signal: "SIGKILL"}, "killed by signal SIGKILL", false},
		// Adopted: not our child, so a SIGKILL and a power-off look alike.
		{ExitStatus{Code: -1, NotChild: true}, "exit status unknown (not our child)", false},
		{ExitStatus{Code: -1, Err: "watch adopted firecracker: poll pidfd: EBADF", NotChild: true}, "watch adopted firecracker: poll pidfd: EBADF", false},
	} {
		if got := tt.st.String(); got != tt.text {
			t.Errorf("%+v: String() = %q, want %q", tt.st, got, tt.text)
		}
		if got := tt.st.Clean(); got != tt.clean {
			t.Errorf("%+v: Clean() = %v, want %v", tt.st, got, tt.clean)
		}
	}
}
