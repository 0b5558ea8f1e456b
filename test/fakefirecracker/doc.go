// Command fake-firecracker stands in for the firecracker binary where none can
// run (no binary, no usable KVM). It is honest where banger can notice: it
// serves the Firecracker API on a unix socket, validates every request against
// the official OpenAPI description (test/fcspec, proven verdict-equal to
// kin-openapi's reading of it by a differential test), answers
// faults with Firecracker's status codes and wording, enforces the pre-/post-
// boot rules, checks that the files it is given exist, implements the
// hybrid-vsock handshake, and "boots" a stand-in guest process, normally the
// real banger-vsock-agent. It never starts a VM.
//
// Build: go build -o bin/fake-firecracker ./test/fakefirecracker
//
// # Command line
//
//	fake-firecracker --api-sock PATH [--id ID] [--log-path FILE] [--level L] [--show-level]
//	fake-firecracker --version        # prints "Firecracker v1.16.1"
//
// Also accepted and ignored, as real launchers pass them: --show-log-origin,
// --boot-timer, --no-seccomp, --enable-pci, --module, --seccomp-filter,
// --http-api-max-payload-size, --mmds-size-limit, --start-time-us,
// --start-time-cpu-us, --parent-cpu-time-us. Refused with exit 1:
// --config-file, --no-api, --metadata (configure through the API). Unknown
// flags exit 153, Firecracker's argument-parsing code. Unlike Firecracker,
// --api-sock is required (no /run/firecracker.socket default).
//
// If PATH exists the fake exits 1 with Firecracker's "Failed to open the API
// socket at: PATH. Check that it is not already used." and leaves PATH alone.
//
// # Environment
//
//	BANGER_FC_SPEC          path of firecracker-api.yaml; otherwise found by walking up
//	                        from the working directory to shared/firecracker/. Without
//	                        it the fake refuses to start.
//	BANGER_FC_SPEC_CACHE    directory for the compiled spec (keyed by its SHA-256);
//	                        default banger-fcspec under the user's cache directory.
//	BANGER_FAKE_GUEST       stand-in guest binary, run at InstanceStart as
//	                        GUEST --listen unix:<api-sock>.guest/vsock_<port>.sock
//	                        Unset: no guest; vsock CONNECTs are closed unanswered.
//	BANGER_FAKE_BOOT_FAIL=1 the VMM "crashes" (exit 1) ~100 ms after answering InstanceStart.
//
// The guest receives BANGER_FAKE_BOOT_ARGS (the kernel command line) and, when
// a vsock is configured, BANGER_FAKE_VSOCK_HOST (uds_path).
//
// # Kernel command line (boot_args)
//
//	banger.agent_port=N           guest port the agent listens on (default 1024)
//	banger.fake_boot_delay_ms=N   start the guest N ms after InstanceStart (state is Running meanwhile)
//	banger.fake_fail=panic        same as BANGER_FAKE_BOOT_FAIL=1
//
// # Behaviour
//
// Output: the serial console (guest stdout/stderr, plus a "fake-firecracker:
// booting ..." line) goes to stdout, as Firecracker prints the guest console.
// The VMM log goes to --log-path / PUT /logger log_path (which must already
// exist, as with Firecracker), otherwise to stderr (Firecracker uses stdout).
//
// Lifecycle: the fake exits 0 when the guest process exits (a guest halting or
// rebooting ends Firecracker too); SendCtrlAltDel sends SIGTERM to the guest's
// process group, so a paused VM acts on it only once resumed. PATCH /vm
// Paused/Resumed sends SIGSTOP/SIGCONT and answers once the guest has stopped.
// On SIGTERM or SIGINT the fake kills the guest, removes the API socket and the
// guest directory, then dies by that same signal, so its parent sees what it
// would see for Firecracker. The guest also gets SIGKILL if the fake is killed
// outright; the API socket is then left behind, as Firecracker leaves it.
//
// Hybrid vsock: PUT /vsock binds uds_path immediately (failing with "Address
// in use" if it exists); connections are answered from InstanceStart on.
// "CONNECT <port>\n" is forwarded to <api-sock>.guest/vsock_<port>.sock and
// answered "OK <n>\n" (n counts up from 1073741824, like Firecracker's host
// ports), after which bytes flow both ways; no listener means the connection
// is closed without a reply. Guest-initiated connections follow Firecracker's
// contract: the guest dials <uds_path>_<port>, where the host listens. Like
// Firecracker, the fake does not remove uds_path when it exits.
//
// Snapshots: PUT /snapshot/create works only after boot and while paused; it
// writes a JSON state file (the VM's configuration, not Firecracker's
// format) and a sparse memory file of mem_size_mib. PUT /snapshot/load works
// only on a fresh process (after nothing but the logger and metrics), wants
// exactly one of mem_backend (File) and mem_file_path, checks the state file
// parses and the memory file has the guest's size, re-opens the recorded
// drive paths (relative ones against the working directory, as Firecracker
// does), applies network_overrides and vsock_override, and starts the
// stand-in guest afresh behind the (new) vsock socket: paused, or running
// with resume_vm (PATCH /vm Resumed runs it later). A load that fails past
// the phase checks answers its fault and then exits 1, as Firecracker
// treats such a process as too dirty to recover.
//
// Not modelled (clear "fake-firecracker does not implement" fault): Uffd
// memory backends, balloon queries and updates, pmem, memory hotplug,
// vhost-user drives. Taps are not opened, only checked for duplicates.
package main
