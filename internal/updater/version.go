package updater

import (
	"regexp"
	"strconv"
	"strings"
)

// releaseVersionRe is what a published version looks like. It doubles as
// the gate for using a version from the (unsigned) manifest in URLs and
// file names, so it admits no '/', '%' or '+'.
var releaseVersionRe = regexp.MustCompile(`^v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// NormalizeVersion accepts "0.2.0" or "v0.2.0" and returns "v0.2.0", or
// false when s is not a release version.
func NormalizeVersion(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "v") {
		s = "v" + s
	}
	if len(s) > 64 || !releaseVersionRe.MatchString(s) {
		return "", false
	}
	return s, true
}

// TarballName is the file a release publishes for arch, e.g.
// banger_0.2.0_linux_amd64.tar.gz for v0.2.0.
func TarballName(version, arch string) string {
	return "banger_" + strings.TrimPrefix(version, "v") + "_linux_" + arch + ".tar.gz"
}

// compareVersions orders two release versions by semantic-versioning
// precedence. ok is false when either is not a release version (a dev
// build), in which case no order is known.
func compareVersions(a, b string) (cmp int, ok bool) {
	va, oka := NormalizeVersion(a)
	vb, okb := NormalizeVersion(b)
	if !oka || !okb {
		return 0, false
	}
	ca, pa := splitVersion(va)
	cb, pb := splitVersion(vb)
	for i := range 3 {
		if ca[i] != cb[i] {
			return sign(ca[i] - cb[i]), true
		}
	}
	return comparePrerelease(pa, pb), true
}

func splitVersion(v string) (core [3]int64, pre string) {
	v = strings.TrimPrefix(v, "v")
	v, pre, _ = strings.Cut(v, "-")
	for i, p := range strings.SplitN(v, ".", 3) {
		core[i], _ = strconv.ParseInt(p, 10, 64)
	}
	return core, pre
}

// comparePrerelease follows semver: no prerelease outranks any prerelease;
// numeric identifiers compare as numbers and below alphanumeric ones.
func comparePrerelease(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, y := as[i], bs[i]
		if x == y {
			continue
		}
		nx, errx := strconv.ParseInt(x, 10, 64)
		ny, erry := strconv.ParseInt(y, 10, 64)
		switch {
		case errx == nil && erry == nil:
			return sign(nx - ny)
		case errx == nil:
			return -1
		case erry == nil:
			return 1
		case x < y:
			return -1
		default:
			return 1
		}
	}
	return sign(int64(len(as) - len(bs)))
}

func sign(n int64) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
