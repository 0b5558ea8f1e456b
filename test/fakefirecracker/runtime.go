package main

import (
	"encoding/json"
	"syscall"
	"time"
)

const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// pauseTimeout bounds the wait for a guest to stop on a pause.
const pauseTimeout = 5 * time.Second

// putAction runs InstanceStart, SendCtrlAltDel or FlushMetrics. The phase
// rule depends on the action, so it is checked here rather than in routes.
func (v *microVM) putAction(_ string, body []byte) (any, error) {
	var req struct {
		ActionType string `json:"action_type"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	started := v.state != stateNotStarted
	switch req.ActionType {
	case "InstanceStart":
		if started {
			return nil, faultf(msgNotAfterBoot)
		}
		return v.instanceStart()
	case "SendCtrlAltDel":
		if !started {
			return nil, faultf(msgNotBeforeBoot)
		}
		return v.sendCtrlAltDel()
	case "FlushMetrics":
		if !started {
			return nil, faultf(msgNotBeforeBoot)
		}
		return v.flushMetrics()
	default:
		// The spec's enum already rejects anything else.
		return nil, notImplemented("PUT", "/actions "+req.ActionType)
	}
}

// sendCtrlAltDel is the guest's cue to shut down. The stand-in guest gets
// SIGTERM (delivered only once it runs again if the VM is paused, as a paused
// vCPU reads no keyboard); the fake exits when the guest does. Without a
// stand-in guest the VM "reboots" at once.
func (v *microVM) sendCtrlAltDel() (any, error) {
	if v.guest == nil {
		v.requestExit(0, "Ctrl-Alt-Del with no stand-in guest")
		return nil, nil
	}
	if err := v.guest.signal(syscall.SIGTERM); err != nil {
		return nil, faultf("Internal VMM error: %v", err)
	}
	return nil, nil
}

// flushMetrics writes one metrics line. Like Firecracker, flushing without a
// configured metrics file succeeds and writes nothing.
func (v *microVM) flushMetrics() (any, error) {
	if v.metrics == nil {
		return nil, nil
	}
	line, _ := json.Marshal(map[string]any{
		"utc_timestamp_ms": time.Now().UnixMilli(),
		"fake_firecracker": map[string]string{"note": "placeholder metrics from the fake Firecracker"},
	})
	if _, err := v.metrics.Write(append(line, '\n')); err != nil {
		return nil, faultf("Internal VMM error: Error writing metrics: %s", osError(err))
	}
	return nil, nil
}

// patchVMState pauses or resumes the vCPUs: SIGSTOP/SIGCONT to the guest.
func (v *microVM) patchVMState(_ string, body []byte) (any, error) {
	var req struct {
		State string `json:"state"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	sig, next := sigCont, stateRunning
	if req.State == "Paused" {
		sig, next = sigStop, statePaused
	}
	if v.guest != nil {
		if err := v.guest.signal(sig); err != nil {
			return nil, faultf("Internal VMM error: %v", err)
		}
		if sig == sigStop {
			if err := v.guest.waitStopped(pauseTimeout); err != nil {
				return nil, faultf("Internal VMM error: %v", err)
			}
		}
	}
	v.state = next
	return nil, nil
}
