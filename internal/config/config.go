// Package config loads banger's TOML configuration: defaults first, then the
// file, then validation. Every problem comes back as one sentence naming the
// file and the key, because a config error is always the user's to fix.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/network/dns"
)

// Config is the whole configuration file.
type Config struct {
	// VMM picks the driver: "auto", "firecracker" or "qemu".
	VMM         string      `toml:"vmm"`
	Daemon      Daemon      `toml:"daemon"`
	VM          VMDefaults  `toml:"vm"`
	Firecracker Firecracker `toml:"firecracker"`
	QEMU        QEMU        `toml:"qemu"`
	Network     Network     `toml:"network"`
	Image       Image       `toml:"image"`
	Sync        Sync        `toml:"sync"`
}

// Sync lists files from the owner's home copied into every VM at start and
// on `banger vm sync` (e.g. "~/.gitconfig", "~/.config/gh/"). Paths outside
// the home directory are refused when used.
type Sync struct {
	Paths []string `toml:"paths"`
}

// Daemon configures bangerd itself.
type Daemon struct {
	LogLevel string `toml:"log_level"`
}

// VMDefaults are used when `vm create` leaves a value out.
type VMDefaults struct {
	Image       string   `toml:"image"`
	VCPUs       int      `toml:"vcpus"`
	MemoryMiB   int      `toml:"memory_mib"`
	DiskSize    ByteSize `toml:"disk_size"`
	StopTimeout Duration `toml:"stop_timeout"`
	BootTimeout Duration `toml:"boot_timeout"`
	// ConsoleLogMax caps each VM's serial console log: the guest writes
	// it, so it must not fill the disk (the oldest output is cut).
	ConsoleLogMax ByteSize `toml:"console_log_max"`
}

// Firecracker configures the Firecracker driver.
type Firecracker struct {
	Binary string `toml:"binary"`
	// Jailer, when set, is the jailer binary used to launch Firecracker.
	Jailer string `toml:"jailer"`
}

// QEMU configures the QEMU microvm driver.
type QEMU struct {
	Binary string `toml:"binary"`
	// Accel is "auto", "kvm" or "tcg".
	Accel string `toml:"accel"`
}

// Network configures the bridge, the VM subnet and DNS names.
type Network struct {
	// Enabled is "auto" (network VMs when privileged operations are
	// available: the daemon is root or the root helper is installed),
	// "on" (refuse to run VMs without a network) or "off".
	Enabled string `toml:"enabled"`
	Bridge  string `toml:"bridge"`
	Subnet  string `toml:"subnet"`
	Domain  string `toml:"domain"`
	// Egress is new VMs' default egress policy: "allow" (anything NAT
	// reaches), "deny" or "allowlist" (with `vm create --allow`).
	Egress string `toml:"egress"`
}

// Image configures image builds and warm starts.
type Image struct {
	DebianMirror string `toml:"debian_mirror"`
	Suite        string `toml:"suite"`
	// GoldenSnapshots is how many golden snapshots (warm-start states, one
	// per VM shape) each image keeps; making one more deletes the least
	// recently used. 0 turns warm creates off.
	GoldenSnapshots int `toml:"golden_snapshots"`
}

// Default returns the configuration used when the file is absent.
func Default() Config {
	return Config{
		VMM:    "auto",
		Daemon: Daemon{LogLevel: "info"},
		VM: VMDefaults{
			Image:         "default",
			VCPUs:         2,
			MemoryMiB:     1024,
			DiskSize:      4 << 30,
			StopTimeout:   Duration(10 * time.Second),
			BootTimeout:   Duration(90 * time.Second),
			ConsoleLogMax: 16 << 20, // as vmmproc.DefaultConsoleLogMax
		},
		Firecracker: Firecracker{Binary: "firecracker"},
		QEMU:        QEMU{Binary: "qemu-system-x86_64", Accel: "auto"},
		Network:     Network{Enabled: "auto", Bridge: "banger0", Subnet: "172.30.0.0/24", Domain: "banger", Egress: "allow"},
		Image:       Image{DebianMirror: "http://deb.debian.org/debian", Suite: "bookworm", GoldenSnapshots: 3},
	}
}

// Load reads path over the defaults. A missing file is not an error: banger
// works with no configuration at all.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := Parse(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes TOML data over cfg and validates the result.
func Parse(data []byte, cfg *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return describeDecodeError(err)
	}
	return cfg.Validate()
}

func describeDecodeError(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		row, _ := e.Position()
		return fmt.Errorf("unknown key %q (line %d); run `banger config defaults` to see every key", strings.Join(e.Key(), "."), row)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		if key := strings.Join(de.Key(), "."); key != "" {
			return fmt.Errorf("key %q (line %d): %s", key, row, plainMessage(de.Error()))
		}
		return fmt.Errorf("line %d: %s", row, plainMessage(de.Error()))
	}
	// Type mismatches arrive without a Key; the message names the Go field,
	// so map it back to the TOML key the user wrote.
	msg := err.Error()
	if m := fieldInMsg.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("key %q: %s", tomlKeyForField(m[1]), plainMessage(msg))
	}
	return errors.New(plainMessage(msg))
}

var (
	fieldInMsg   = regexp.MustCompile(`struct field \w+\.([A-Za-z0-9_.]+) of type`)
	typeMismatch = regexp.MustCompile(`cannot decode TOML (\w+) into struct field \S+ of type (\S+)`)
)

// plainMessage rewrites the TOML library's wording for people who never saw
// banger's Go structs.
func plainMessage(msg string) string {
	msg = strings.TrimPrefix(msg, "toml: ")
	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		want := strings.TrimPrefix(m[2], "config.")
		switch want {
		case "int", "int64", "uint32":
			want = "an integer"
		case "string":
			want = "a string"
		case "bool":
			want = "true or false"
		}
		return fmt.Sprintf("expected %s, got a TOML %s", want, m[1])
	}
	return msg
}

// tomlKeyForField turns "VM.VCPUs" into "vm.vcpus" using the struct tags.
func tomlKeyForField(field string) string {
	if k, ok := fieldKeys()[field]; ok {
		return k
	}
	return strings.ToLower(field)
}

// Validate checks every value and names the first bad key.
func (c Config) Validate() error {
	bad := func(key string, got any, want string) error {
		return fmt.Errorf("key %q: %s, got %v", key, want, got)
	}
	switch c.VMM {
	case "auto", "firecracker", "qemu":
	default:
		return bad("vmm", quote(c.VMM), `must be "auto", "firecracker" or "qemu"`)
	}
	switch c.Daemon.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("daemon.log_level", quote(c.Daemon.LogLevel), `must be "debug", "info", "warn" or "error"`)
	}
	if c.VM.VCPUs < 1 || c.VM.VCPUs > 32 {
		return bad("vm.vcpus", c.VM.VCPUs, "must be between 1 and 32")
	}
	if c.VM.MemoryMiB < 128 || c.VM.MemoryMiB > 256*1024 {
		return bad("vm.memory_mib", c.VM.MemoryMiB, "must be between 128 and 262144")
	}
	if c.VM.DiskSize < 64<<20 {
		return bad("vm.disk_size", c.VM.DiskSize, "must be at least 64M")
	}
	if c.VM.StopTimeout <= 0 {
		return bad("vm.stop_timeout", c.VM.StopTimeout, "must be a positive duration such as \"10s\"")
	}
	if c.VM.BootTimeout <= 0 {
		return bad("vm.boot_timeout", c.VM.BootTimeout, "must be a positive duration such as \"90s\"")
	}
	// Half the cap survives a trim, and must hold what `vm logs` reads.
	if c.VM.ConsoleLogMax < 1<<20 {
		return bad("vm.console_log_max", c.VM.ConsoleLogMax, "must be at least 1M")
	}
	if c.Firecracker.Binary == "" {
		return bad("firecracker.binary", `""`, "must name the firecracker binary")
	}
	switch c.QEMU.Accel {
	case "auto", "kvm", "tcg":
	default:
		return bad("qemu.accel", quote(c.QEMU.Accel), `must be "auto", "kvm" or "tcg"`)
	}
	switch c.Network.Enabled {
	case "auto", "on", "off":
	default:
		return bad("network.enabled", quote(c.Network.Enabled), `must be "auto", "on" or "off"`)
	}
	switch c.Network.Egress {
	case "allow", "deny", "allowlist":
	default:
		return bad("network.egress", quote(c.Network.Egress), `must be "allow", "deny" or "allowlist"`)
	}
	if !bridgeName.MatchString(c.Network.Bridge) {
		return bad("network.bridge", quote(c.Network.Bridge), "must start with \"banger\" and be at most 15 characters of [a-z0-9-]")
	}
	p, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 29 || p.Bits() < 16 || p.Masked() != p {
		return bad("network.subnet", quote(c.Network.Subnet), "must be an IPv4 network between /16 and /29 such as \"172.30.0.0/24\"")
	}
	if err := dns.ValidRoutingDomain(c.Network.Domain); err != nil {
		return fmt.Errorf("key %q: %s", "network.domain", strings.TrimPrefix(err.Error(), "invalid argument: "))
	}
	if !strings.HasPrefix(c.Image.DebianMirror, "http://") && !strings.HasPrefix(c.Image.DebianMirror, "https://") {
		return bad("image.debian_mirror", quote(c.Image.DebianMirror), "must be an http:// or https:// URL")
	}
	if c.Image.GoldenSnapshots < 0 || c.Image.GoldenSnapshots > 64 {
		return bad("image.golden_snapshots", c.Image.GoldenSnapshots, "must be between 0 (no warm creates) and 64")
	}
	return nil
}

var (
	bridgeName = regexp.MustCompile(`^banger[a-z0-9-]{0,9}$`)
)

func quote(s string) string { return fmt.Sprintf("%q", s) }

// DefaultTOML renders the defaults as a commented-free TOML document, for
// `banger config defaults`.
func DefaultTOML() ([]byte, error) {
	return toml.Marshal(Default())
}
