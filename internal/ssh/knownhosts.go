package ssh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	xssh "golang.org/x/crypto/ssh"
)

// ErrHostKeyMismatch means a VM presented host keys other than the ones
// pinned at its first boot.
var ErrHostKeyMismatch = errors.New("host key mismatch")

// vmTag marks the known_hosts lines banger manages for one VM; the VM's ID
// (not its name) is what tells a restart from a recreation.
const vmTag = "banger-vm="

// PinResult says what Pin did.
type PinResult string

// Pin outcomes.
const (
	// Recorded: first boot of this VM; its keys are now pinned.
	PinRecorded PinResult = "recorded"
	// PinReplaced: first boot of a VM that took over a name or address an
	// earlier VM had; that VM's entries for it were replaced.
	PinReplaced PinResult = "replaced"
	// PinConfirmed: the VM presented the keys pinned before.
	PinConfirmed PinResult = "confirmed"
)

// MismatchError details ErrHostKeyMismatch.
type MismatchError struct {
	Hosts  []string
	Pinned []string // fingerprints
	Got    []string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: the guest %s presents SSH host key %s, but %s was pinned at its first boot; refusing to trust it",
		ErrHostKeyMismatch, e.Hosts[0], strings.Join(e.Got, ", "), strings.Join(e.Pinned, ", "))
}

func (e *MismatchError) Unwrap() error { return ErrHostKeyMismatch }

// KnownHosts is the banger-managed known_hosts file. Lines banger writes
// carry the VM ID in their comment; other lines are kept as they are.
type KnownHosts struct {
	Path string
}

type khLine struct {
	raw   string // unparsed (comments, unmanaged or unreadable lines)
	hosts []string
	key   string // "type base64"
	vmID  string
}

// Pin checks and records the host keys (authorized_keys format) that the
// VM vmID presents under hosts (its DNS name, then its address if any):
//
//   - no entry for this VM yet: the keys are recorded, replacing entries an
//     earlier VM left under the same name or address (recreated VMs get new
//     keys; their old pins are stale, not attacks);
//   - entries for this VM: every presented key of a pinned type must equal
//     the pinned one, and at least one must match, else *MismatchError. New
//     key types are added; the host names are refreshed.
//
// Concurrent Pins (several VMs booting) are serialized with flock(2).
func (k KnownHosts) Pin(vmID string, hosts, keys []string) (PinResult, error) {
	if len(hosts) == 0 || len(keys) == 0 {
		return "", errors.New("pin host keys: no host names or no keys")
	}
	presented := map[string]string{} // type → "type base64"
	for _, s := range keys {
		key, _, _, _, err := xssh.ParseAuthorizedKey([]byte(s))
		if err != nil {
			return "", fmt.Errorf("pin host keys: guest reported an unreadable key %q: %w", s, err)
		}
		presented[key.Type()] = normal(key)
	}
	var result PinResult
	err := k.update(func(lines []khLine) ([]khLine, error) {
		pinned := map[string]string{}
		for _, l := range lines {
			if l.vmID == vmID && l.key != "" {
				pinned[strings.Fields(l.key)[0]] = l.key
			}
		}
		if len(pinned) > 0 {
			matched := false
			for typ, key := range presented {
				old, ok := pinned[typ]
				if ok && old != key {
					return nil, mismatch(hosts, pinned, presented)
				}
				matched = matched || ok
			}
			if !matched {
				return nil, mismatch(hosts, pinned, presented)
			}
			result = PinConfirmed
			for typ, key := range presented {
				pinned[typ] = key
			}
		} else {
			result = PinRecorded
			pinned = presented
		}
		var out []khLine
		for _, l := range lines {
			if l.vmID == vmID {
				continue // rewritten below
			}
			if l.key != "" && overlaps(l.hosts, hosts) {
				// Another VM's (or a hand-added) entry for our name or
				// address: that machine is gone from under this name.
				l.hosts = slices.DeleteFunc(slices.Clone(l.hosts), func(h string) bool { return slices.Contains(hosts, h) })
				if result == PinRecorded {
					result = PinReplaced
				}
				if len(l.hosts) == 0 {
					continue
				}
			}
			out = append(out, l)
		}
		types := make([]string, 0, len(pinned))
		for typ := range pinned {
			types = append(types, typ)
		}
		slices.Sort(types)
		for _, typ := range types {
			out = append(out, khLine{hosts: hosts, key: pinned[typ], vmID: vmID})
		}
		return out, nil
	})
	return result, err
}

// Forget removes every entry of VM vmID (for `vm delete`).
func (k KnownHosts) Forget(vmID string) error {
	return k.update(func(lines []khLine) ([]khLine, error) {
		return slices.DeleteFunc(lines, func(l khLine) bool { return l.vmID == vmID }), nil
	})
}

// Pinned returns the keys pinned for VM vmID.
func (k KnownHosts) Pinned(vmID string) ([]string, error) {
	lines, err := k.read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range lines {
		if l.vmID == vmID {
			out = append(out, l.key)
		}
	}
	return out, nil
}

func mismatch(hosts []string, pinned, presented map[string]string) error {
	fp := func(m map[string]string) []string {
		var out []string
		for _, s := range m {
			key, _, _, _, err := xssh.ParseAuthorizedKey([]byte(s))
			if err == nil {
				out = append(out, key.Type()+" "+xssh.FingerprintSHA256(key))
			}
		}
		slices.Sort(out)
		return out
	}
	return &MismatchError{Hosts: hosts, Pinned: fp(pinned), Got: fp(presented)}
}

func normal(key xssh.PublicKey) string {
	return strings.TrimSpace(string(xssh.MarshalAuthorizedKey(key)))
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func (k KnownHosts) read() ([]khLine, error) {
	b, err := os.ReadFile(k.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", k.Path, err)
	}
	var lines []khLine
	for _, raw := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		lines = append(lines, parseLine(raw))
	}
	return lines, nil
}

func parseLine(raw string) khLine {
	f := strings.Fields(raw)
	if len(f) < 3 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], "@") {
		return khLine{raw: raw}
	}
	l := khLine{raw: raw, hosts: strings.Split(f[0], ","), key: f[1] + " " + f[2]}
	for _, c := range f[3:] {
		if id, ok := strings.CutPrefix(c, vmTag); ok {
			l.vmID = id
		}
	}
	return l
}

func (l khLine) String() string {
	if l.vmID == "" {
		return l.raw
	}
	return strings.Join(l.hosts, ",") + " " + l.key + " " + vmTag + l.vmID
}

// update runs fn over the file's lines under an exclusive lock and writes
// the result atomically (the file is never half-written for a concurrent
// ssh reading it).
func (k KnownHosts) update(fn func([]khLine) ([]khLine, error)) error {
	if err := os.MkdirAll(filepath.Dir(k.Path), 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(k.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", k.Path, err)
	}
	lines, err := k.read()
	if err != nil {
		return err
	}
	lines, err = fn(lines)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, l := range lines {
		if s := l.String(); s != "" || l.raw != "" {
			b.WriteString(s)
			b.WriteByte('\n')
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.Path), ".known_hosts-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // fails harmlessly once renamed
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), k.Path)
}
