package firecracker

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
)

// JailerConfig runs Firecracker under Firecracker's jailer (chroot, own
// uid/gid, optional network namespace). The jailer must run as root.
type JailerConfig struct {
	// Path is the jailer binary.
	Path string
	// UID and GID are what the jailer drops to before exec-ing Firecracker.
	UID, GID int
	// ChrootBaseDir is where jails are built; empty means the jailer's
	// default, /srv/jailer.
	ChrootBaseDir string
	// NetNS is an optional network namespace handle to join, e.g.
	// /var/run/netns/banger.
	NetNS string
}

// defaultChrootBase is the jailer's own default for --chroot-base-dir.
const defaultChrootBase = "/srv/jailer"

// jailedAPISock is the API socket path as the jailed Firecracker sees it: the
// chroot root is the one directory the jailer hands to the jail's uid.
const jailedAPISock = "/api.socket"

// layout says where one VM's files are, as the host sees them and as
// Firecracker sees them (they differ under the jailer's chroot).
type layout struct {
	// apiSock is the API socket's host path; apiSockArg is --api-sock.
	apiSock    string
	apiSockArg string
	// jailRoot is the chroot directory, empty when not jailed.
	jailRoot string
}

func (d *Driver) layoutFor(spec vmm.LaunchSpec) (layout, error) {
	j := d.cfg.Jailer
	if j == nil {
		sock := filepath.Join(spec.RunDir, apiSocketName)
		return layout{apiSock: sock, apiSockArg: sock}, nil
	}
	bin, err := d.firecrackerBinary()
	if err != nil {
		return layout{}, err
	}
	base := j.ChrootBaseDir
	if base == "" {
		base = defaultChrootBase
	}
	// The jailer builds <base>/<exec file name>/<id>/root.
	root := filepath.Join(base, filepath.Base(bin), spec.VMID, "root")
	return layout{
		apiSock:    filepath.Join(root, jailedAPISock),
		apiSockArg: jailedAPISock,
		jailRoot:   root,
	}, nil
}

// inside translates a host path to the path Firecracker must be given. Under
// the jailer, Firecracker only sees its chroot, so every file it opens must
// have been staged (hard-linked or bind-mounted) into the jail first.
func (l layout) inside(hostPath string) (string, error) {
	if l.jailRoot == "" || hostPath == "" {
		return hostPath, nil
	}
	rel, err := filepath.Rel(l.jailRoot, hostPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s is outside the jail %s; stage it inside the jail first", hostPath, l.jailRoot)
	}
	return "/" + rel, nil
}

// firecrackerBinary resolves BinaryPath to an absolute path; the jailer
// needs one for --exec-file.
func (d *Driver) firecrackerBinary() (string, error) {
	bin, err := exec.LookPath(d.cfg.BinaryPath)
	if err != nil {
		return "", fmt.Errorf("find firecracker binary %q: %w", d.cfg.BinaryPath, err)
	}
	return filepath.Abs(bin)
}

// jailerArgs builds the jailer's argv (without argv[0]) following
// docs/jailer.md: jailer options, then "--", then Firecracker's own options.
// The jailer passes --id to Firecracker itself.
func jailerArgs(j JailerConfig, execFile, vmID string, firecrackerArgs []string) []string {
	args := []string{
		"--id", vmID,
		"--exec-file", execFile,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
	}
	if j.ChrootBaseDir != "" {
		args = append(args, "--chroot-base-dir", j.ChrootBaseDir)
	}
	if j.NetNS != "" {
		args = append(args, "--netns", j.NetNS)
	}
	args = append(args, "--")
	return append(args, firecrackerArgs...)
}

// validInstanceID mirrors Firecracker's and the jailer's rule for --id:
// letters, digits and hyphens, at most 64 characters. Checking up front
// turns a cryptic early exit into a clear error.
func validInstanceID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if r != '-' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}
