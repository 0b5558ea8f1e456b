package main

import (
	"encoding/json"
	"net"
	"os"
)

// Device handlers: drives, network interfaces and the vsock. Fault wording
// follows config.go's conventions.

type drive struct {
	DriveID      string          `json:"drive_id"`
	PathOnHost   string          `json:"path_on_host,omitempty"`
	IsRootDevice bool            `json:"is_root_device"`
	IsReadOnly   bool            `json:"is_read_only"`
	PartUUID     string          `json:"partuuid,omitempty"`
	CacheType    string          `json:"cache_type,omitempty"`
	IOEngine     string          `json:"io_engine,omitempty"`
	Socket       string          `json:"socket,omitempty"`
	RateLimiter  json.RawMessage `json:"rate_limiter,omitempty"`
}

// openFlag is how Firecracker opens a drive's backing file: a writable drive
// on a read-only file fails at PUT time.
func (d drive) openFlag() int {
	if d.IsReadOnly {
		return os.O_RDONLY
	}
	return os.O_RDWR
}

func (v *microVM) putDrive(id string, body []byte) (any, error) {
	var d drive
	if err := decode(body, &d); err != nil {
		return nil, err
	}
	if d.Socket != "" {
		return nil, notImplemented("PUT", "/drives/"+id+" with a vhost-user socket")
	}
	if d.IsRootDevice {
		for _, other := range v.drives {
			if other.IsRootDevice && other.DriveID != d.DriveID {
				return nil, faultf("Drive config error: A root block device already exists!")
			}
		}
	}
	if d.PathOnHost == "" {
		// Approximated wording.
		return nil, faultf("Drive config error: Unable to create the block device: path_on_host is required for a virtio-block drive")
	}
	if err := canOpen(d.PathOnHost, d.openFlag()); err != nil {
		// Approximated wording.
		return nil, faultf("Drive config error: Unable to create the block device: %s: %s", d.PathOnHost, osError(err))
	}

	drives := make([]drive, 0, len(v.drives)+1)
	for _, other := range v.drives {
		if other.DriveID != d.DriveID {
			drives = append(drives, other)
		}
	}
	if d.IsRootDevice {
		drives = append([]drive{d}, drives...)
	} else {
		drives = append(drives, d)
	}
	v.drives, v.bootPath = drives, true
	return nil, nil
}

// patchDrive swaps the backing file or rate limiter of an attached drive.
func (v *microVM) patchDrive(id string, body []byte) (any, error) {
	var patch struct {
		PathOnHost  string          `json:"path_on_host"`
		RateLimiter json.RawMessage `json:"rate_limiter"`
	}
	if err := decode(body, &patch); err != nil {
		return nil, err
	}
	for i, d := range v.drives {
		if d.DriveID != id {
			continue
		}
		if patch.PathOnHost != "" {
			if err := canOpen(patch.PathOnHost, d.openFlag()); err != nil {
				// Approximated wording.
				return nil, faultf("Drive config error: Unable to patch the block device: %s: %s", patch.PathOnHost, osError(err))
			}
			v.drives[i].PathOnHost = patch.PathOnHost
		}
		if patch.RateLimiter != nil {
			v.drives[i].RateLimiter = patch.RateLimiter
		}
		return nil, nil
	}
	// Approximated wording.
	return nil, faultf("Drive config error: Unable to patch the block device: no drive with id %q", id)
}

type netIface struct {
	IfaceID       string          `json:"iface_id"`
	HostDevName   string          `json:"host_dev_name"`
	GuestMAC      string          `json:"guest_mac,omitempty"`
	MTU           int             `json:"mtu,omitempty"`
	RxRateLimiter json.RawMessage `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter json.RawMessage `json:"tx_rate_limiter,omitempty"`
}

// putNetIface records an interface. The fake does not open the tap (that
// needs CAP_NET_ADMIN and a real device); it does refuse what Firecracker
// refuses between interfaces: a shared tap or a shared guest MAC.
func (v *microVM) putNetIface(id string, body []byte) (any, error) {
	var n netIface
	if err := decode(body, &n); err != nil {
		return nil, err
	}
	if n.GuestMAC != "" {
		if mac, err := net.ParseMAC(n.GuestMAC); err != nil || len(mac) != 6 {
			// Approximated wording (serde's MacAddr error).
			return nil, faultf("An error occurred when deserializing the json body of a request: invalid MAC address %q.", n.GuestMAC)
		}
	}
	ifaces := make([]netIface, 0, len(v.ifaces)+1)
	for _, other := range v.ifaces {
		if other.IfaceID == id {
			continue
		}
		if other.HostDevName == n.HostDevName {
			return nil, faultf("Network config error: The host device name %s is already in use.", n.HostDevName)
		}
		if n.GuestMAC != "" && other.GuestMAC == n.GuestMAC {
			return nil, faultf("Network config error: The guest MAC address %s is already in use.", n.GuestMAC)
		}
		ifaces = append(ifaces, other)
	}
	v.ifaces, v.bootPath = append(ifaces, n), true
	return nil, nil
}

// patchNetIface updates rate limiters of an attached interface.
func (v *microVM) patchNetIface(id string, body []byte) (any, error) {
	var patch netIface
	if err := decode(body, &patch); err != nil {
		return nil, err
	}
	for i, n := range v.ifaces {
		if n.IfaceID == id {
			if patch.RxRateLimiter != nil {
				v.ifaces[i].RxRateLimiter = patch.RxRateLimiter
			}
			if patch.TxRateLimiter != nil {
				v.ifaces[i].TxRateLimiter = patch.TxRateLimiter
			}
			return nil, nil
		}
	}
	// Approximated wording.
	return nil, faultf("Network config error: Unable to update the net device: no interface with id %q", id)
}

// putVsock binds uds_path now, as Firecracker does; connections wait in the
// listen backlog until InstanceStart. A second PUT replaces the device.
func (v *microVM) putVsock(_ string, body []byte) (any, error) {
	var cfg vsockConfig
	if err := decode(body, &cfg); err != nil {
		return nil, err
	}
	if v.vsock != nil {
		v.vsock.close()
		_ = os.Remove(v.vsock.cfg.UDSPath)
		v.vsock = nil
	}
	hv, err := bindVsock(cfg, v.stderr)
	if err != nil {
		return nil, faultf("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: %s", osError(err))
	}
	v.vsock, v.bootPath = hv, true
	return nil, nil
}
