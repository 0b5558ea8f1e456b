package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

// Knobs read by the fake at InstanceStart. See doc.go for the full list.
const (
	envGuest     = "BANGER_FAKE_GUEST"      // stand-in guest binary
	envBootFail  = "BANGER_FAKE_BOOT_FAIL"  // "1": the VMM dies during boot
	envBootArgs  = "BANGER_FAKE_BOOT_ARGS"  // given to the guest: the kernel command line
	envVsockHost = "BANGER_FAKE_VSOCK_HOST" // given to the guest: uds_path, for guest-initiated connections

	argFail      = "banger.fake_fail"          // =panic: the VMM dies during boot
	argBootDelay = "banger.fake_boot_delay_ms" // =N: the guest starts N ms after InstanceStart
)

// failExitDelay is how long a simulated crash waits after answering
// InstanceStart, so the caller sees the 204 and then the process die, the
// order a real mid-boot crash produces.
const failExitDelay = 100 * time.Millisecond

// maxUnixPath is the longest path bind(2) accepts for a unix socket.
const maxUnixPath = 107

// bootPlan is what InstanceStart will do, decided from the kernel command
// line and the environment.
type bootPlan struct {
	bootArgs  string
	guestBin  string
	agentPort uint32
	delay     time.Duration
	fail      bool
}

func planBoot(bootArgs string, getenv func(string) string) (bootPlan, error) {
	plan := bootPlan{bootArgs: bootArgs, guestBin: getenv(envGuest), fail: getenv(envBootFail) == "1"}
	port, err := agent.PortFromBootArgs(bootArgs)
	if err != nil {
		return bootPlan{}, err
	}
	plan.agentPort = port
	for _, field := range strings.Fields(bootArgs) {
		key, value, _ := strings.Cut(field, "=")
		switch key {
		case argFail:
			plan.fail = plan.fail || value == "panic"
		case argBootDelay:
			ms, err := strconv.Atoi(value)
			if err != nil || ms < 0 {
				return bootPlan{}, fmt.Errorf("kernel parameter %s=%q is not a number of milliseconds", argBootDelay, value)
			}
			plan.delay = time.Duration(ms) * time.Millisecond
		}
	}
	return plan, nil
}

// instanceStart "boots" the VM: it prepares the guest directory, launches the
// stand-in guest (now or after the configured delay) and starts serving the
// vsock. Called with v.mu held.
func (v *microVM) instanceStart() (any, error) {
	if v.boot == nil {
		return nil, faultf("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	plan, err := planBoot(v.boot.args(), v.getenv)
	if err != nil {
		return nil, faultf("Start microvm error: fake-firecracker: %v", err)
	}
	dir, agentSock, err := v.prepareGuestDir(plan.agentPort)
	if err != nil {
		return nil, faultf("Start microvm error: fake-firecracker: %v", err)
	}
	fmt.Fprintf(v.console, "fake-firecracker: booting %s with command line %q\n", v.boot.KernelImagePath, plan.bootArgs)

	switch {
	case plan.fail:
		fmt.Fprintf(v.console, "fake-firecracker: simulating a VMM crash during boot\n")
		time.AfterFunc(failExitDelay, func() { v.requestExit(1, "simulated VMM failure during boot") })
	case plan.guestBin == "":
		fmt.Fprintf(v.console, "fake-firecracker: %s is not set; no stand-in guest, nothing listens on vsock\n", envGuest)
	case plan.delay > 0:
		time.AfterFunc(plan.delay, func() { v.launchDelayed(plan, agentSock) })
	default:
		if err := v.launchGuest(plan, agentSock); err != nil {
			_ = os.RemoveAll(dir)
			v.guestDir = ""
			return nil, faultf("Start microvm error: fake-firecracker: start stand-in guest %s: %v", plan.guestBin, err)
		}
	}
	v.state = stateRunning
	if v.vsock != nil {
		v.vsock.serve(dir)
	}
	return nil, nil
}

// prepareGuestDir makes the directory where the stand-in guest's vsock
// ports live, <api-sock>.guest, and returns it with the agent's socket in
// it. Called with v.mu held.
func (v *microVM) prepareGuestDir(agentPort uint32) (dir, agentSock string, err error) {
	dir = v.apiSock + ".guest"
	agentSock = filepath.Join(dir, fmt.Sprintf("vsock_%d.sock", agentPort))
	if len(agentSock) > maxUnixPath {
		return "", "", fmt.Errorf("guest socket path %s is longer than %d bytes; use a shorter --api-sock", agentSock, maxUnixPath)
	}
	// The directory is named after our own API socket, so a leftover one is
	// from an earlier fake on the same socket that was killed.
	if err := os.RemoveAll(dir); err != nil {
		return "", "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", "", err
	}
	v.guestDir = dir
	return dir, agentSock, nil
}

func (v *microVM) launchDelayed(plan bootPlan, agentSock string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closing {
		return
	}
	if err := v.launchGuest(plan, agentSock); err != nil {
		fmt.Fprintf(v.stderr, "fake-firecracker: start stand-in guest %s: %v\n", plan.guestBin, err)
		v.requestExit(1, "stand-in guest failed to start")
	}
}

// launchGuest starts the guest and arranges for the fake to exit when it
// does, as Firecracker exits when its guest halts or reboots. Called with
// v.mu held.
func (v *microVM) launchGuest(plan bootPlan, agentSock string) error {
	env := []string{envBootArgs + "=" + plan.bootArgs}
	if v.vsock != nil {
		env = append(env, envVsockHost+"="+v.vsock.cfg.UDSPath)
	}
	g, err := startGuest(plan.guestBin, []string{"--listen", "unix:" + agentSock}, env, v.console)
	if err != nil {
		return err
	}
	v.guest = g
	if v.state == statePaused {
		// A paused VM's vCPUs do not run: stopped before anyone can see it run.
		_ = g.signal(sigStop)
		_ = g.waitStopped(pauseTimeout)
	}
	go func() {
		<-g.done
		v.log.logf(levelInfo, "Guest %s; Firecracker exiting", g.status)
		v.requestExit(0, "guest "+g.status)
	}()
	return nil
}
