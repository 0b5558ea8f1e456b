package main

import (
	"encoding/json"
	"os"
	"syscall"
)

// Pre-boot configuration handlers. Bodies reaching them already passed the
// spec, so decoding only fails on types the schema cannot express.
//
// Where a fault message below says "approximated", the real Firecracker
// wording was not confirmed; the prefix ("Drive config error: ...") follows
// Firecracker's VmmActionError. File errors name the path even where the real
// message does not, because a test failure should say which file.

type bootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// defaultBootArgs is Firecracker's kernel command line when boot_args is
// omitted.
const defaultBootArgs = "reboot=k panic=1 pci=off nomodules 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

func (b *bootSource) args() string {
	if b.BootArgs == "" {
		return defaultBootArgs
	}
	return b.BootArgs
}

// putBootSource checks the kernel and initrd can be opened now, as
// Firecracker does when the boot source is set (not at InstanceStart).
func (v *microVM) putBootSource(_ string, body []byte) (any, error) {
	var b bootSource
	if err := decode(body, &b); err != nil {
		return nil, err
	}
	if err := canOpen(b.KernelImagePath, os.O_RDONLY); err != nil {
		return nil, faultf("Boot source error: The kernel file cannot be opened: %s: %s", b.KernelImagePath, osError(err))
	}
	if b.InitrdPath != "" {
		if err := canOpen(b.InitrdPath, os.O_RDONLY); err != nil {
			return nil, faultf("Boot source error: The initrd file cannot be opened: %s: %s", b.InitrdPath, osError(err))
		}
	}
	v.boot, v.bootPath = &b, true
	return nil, nil
}

type machineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMiB      int    `json:"mem_size_mib"`
	SMT             bool   `json:"smt"`
	TrackDirtyPages bool   `json:"track_dirty_pages"`
	HugePages       string `json:"huge_pages"`
	CPUTemplate     string `json:"cpu_template,omitempty"`
}

// defaultMachineConfig is what Firecracker reports before any PUT.
func defaultMachineConfig() machineConfig {
	return machineConfig{VCPUCount: 1, MemSizeMiB: 128, HugePages: "None"}
}

// putMachineConfig replaces the whole configuration; fields left out fall
// back to Firecracker's defaults, not to earlier values.
func (v *microVM) putMachineConfig(_ string, body []byte) (any, error) {
	return v.setMachineConfig(defaultMachineConfig(), body)
}

// patchMachineConfig changes only the fields present in the body.
func (v *microVM) patchMachineConfig(_ string, body []byte) (any, error) {
	return v.setMachineConfig(v.machine, body)
}

func (v *microVM) setMachineConfig(base machineConfig, body []byte) (any, error) {
	if err := decode(body, &base); err != nil {
		return nil, err
	}
	if base.MemSizeMiB <= 0 {
		return nil, faultf("Machine config error: The memory size (MiB) is invalid.")
	}
	if base.SMT && base.VCPUCount > 1 && base.VCPUCount%2 != 0 {
		return nil, faultf("Machine config error: The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	v.machine, v.bootPath = base, true
	return nil, nil
}

func (v *microVM) getMachineConfig(string, []byte) (any, error) {
	return v.machine, nil
}

func (v *microVM) putLogger(_ string, body []byte) (any, error) {
	var cfg struct {
		LogPath   string `json:"log_path"`
		Level     string `json:"level"`
		ShowLevel bool   `json:"show_level"`
	}
	if err := decode(body, &cfg); err != nil {
		return nil, err
	}
	if err := v.log.configure(cfg.LogPath, cfg.Level, cfg.ShowLevel); err != nil {
		// Approximated wording.
		return nil, faultf("Logger error: Failed to open target file: %s: %s", cfg.LogPath, osError(err))
	}
	return nil, nil
}

// putMetrics opens metrics_path without creating it, like Firecracker, and
// only once.
func (v *microVM) putMetrics(_ string, body []byte) (any, error) {
	var cfg struct {
		MetricsPath string `json:"metrics_path"`
	}
	if err := decode(body, &cfg); err != nil {
		return nil, err
	}
	if v.metrics != nil {
		// Approximated wording.
		return nil, faultf("Metrics error: Reinitialization of metrics not allowed.")
	}
	f, err := os.OpenFile(cfg.MetricsPath, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		// Approximated wording.
		return nil, faultf("Metrics error: Cannot initialize the metrics system due to a failed file open: %s: %s", cfg.MetricsPath, osError(err))
	}
	v.metrics = f
	return nil, nil
}

// recordOnly accepts a device the fake does not model (entropy, serial, ...)
// and echoes it in GET /vm/config.
func recordOnly(name string) func(*microVM, string, []byte) (any, error) {
	return func(v *microVM, _ string, body []byte) (any, error) {
		v.extras[name] = json.RawMessage(body)
		v.bootPath = true
		return nil, nil
	}
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return faultf("An error occurred when deserializing the json body of a request: %v.", err)
	}
	return nil
}

func canOpen(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}
