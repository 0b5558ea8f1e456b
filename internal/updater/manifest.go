package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ManifestSchema is the manifest.json format this banger reads. A manifest
// with another number is refused rather than half-understood.
const ManifestSchema = 1

// maxManifestSize bounds manifest.json; it grows by a few hundred bytes
// per release.
const maxManifestSize = 1 << 20

// DefaultChannel is the channel `banger update` follows unless told
// otherwise.
const DefaultChannel = "stable"

// Manifest is the release server's manifest.json. It is not signed: it only
// says which version to fetch. Everything that runs is bound to the signed
// SHA256SUMS, and the tarball's name in it carries the version, so a
// tampered manifest can at worst offer another genuinely signed release
// (which Plan shows before anything happens).
type Manifest struct {
	Schema int `json:"schema"`
	// Channels maps a channel name ("stable") to the version it offers.
	Channels map[string]string `json:"channels"`
	// Releases maps each published version to where its files are.
	Releases map[string]ManifestRelease `json:"releases"`
}

// ManifestRelease describes one published version.
type ManifestRelease struct {
	PublishedAt time.Time `json:"published_at"`
	// MinCompatibleVersion, when set, is the oldest installed version that
	// may update straight to this one.
	MinCompatibleVersion string `json:"min_compatible_version,omitempty"`
	// Tarballs maps a GOARCH to the tarball's file name, which must be
	// TarballName(version, arch).
	Tarballs map[string]string `json:"tarballs"`
}

// Release is one version resolved from the manifest for this machine.
type Release struct {
	Version              string    `json:"version"`
	Channel              string    `json:"channel,omitempty"`
	PublishedAt          time.Time `json:"published_at"`
	MinCompatibleVersion string    `json:"min_compatible_version,omitempty"`
	Arch                 string    `json:"arch"`
	Tarball              string    `json:"tarball"`
	// URL is the release's directory: SHA256SUMS, SHA256SUMS.sig and the
	// tarball live under it.
	URL string `json:"url"`
}

// FileURL is the address of one of the release's files.
func (r Release) FileURL(name string) string { return r.URL + "/" + name }

// ManifestURL is where the manifest lives under a release server's base
// URL; each version's files are under base/<version>/.
func ManifestURL(base string) string { return strings.TrimRight(base, "/") + "/manifest.json" }

// FetchManifest downloads and parses base's manifest.json.
func FetchManifest(ctx context.Context, f Fetcher, base string) (Manifest, error) {
	data, err := f.FetchBounded(ctx, ManifestURL(base), maxManifestSize)
	if err != nil {
		return Manifest{}, fmt.Errorf("release manifest: %w", err)
	}
	return ParseManifest(data)
}

// ParseManifest decodes manifest.json. Unknown fields are ignored so older
// clients keep working when the publisher adds some; a different schema
// number is refused.
func ParseManifest(data []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("release manifest is not valid JSON: %w", err)
	}
	if m.Schema != ManifestSchema {
		return m, fmt.Errorf("release manifest has schema %d, this banger reads schema %d; update by hand from the release page", m.Schema, ManifestSchema)
	}
	return m, nil
}

// Resolve picks the release to install: version when given (any published
// version), else the one channel offers, with arch's tarball.
func (m Manifest) Resolve(base, channel, version, arch string) (Release, error) {
	rel := Release{Arch: arch}
	if version != "" {
		v, ok := NormalizeVersion(version)
		if !ok {
			return rel, fmt.Errorf("%q is not a release version (want e.g. v0.2.0)", version)
		}
		rel.Version = v
	} else {
		v, ok := m.Channels[channel]
		if !ok {
			return rel, fmt.Errorf("the release server has no channel %q (it has: %s)", channel, listKeys(m.Channels))
		}
		nv, ok := NormalizeVersion(v)
		if !ok {
			return rel, fmt.Errorf("the release manifest's channel %q names %q, which is not a release version", channel, v)
		}
		rel.Version, rel.Channel = nv, channel
	}
	mr, ok := m.Releases[rel.Version]
	if !ok {
		return rel, fmt.Errorf("the release server has no release %s (it has: %s)", rel.Version, listKeys(m.Releases))
	}
	rel.PublishedAt = mr.PublishedAt
	if mr.MinCompatibleVersion != "" {
		v, ok := NormalizeVersion(mr.MinCompatibleVersion)
		if !ok {
			return rel, fmt.Errorf("release %s has an invalid min_compatible_version %q", rel.Version, mr.MinCompatibleVersion)
		}
		rel.MinCompatibleVersion = v
	}
	name, ok := mr.Tarballs[arch]
	if !ok {
		return rel, fmt.Errorf("release %s has no build for linux/%s (it has: %s)", rel.Version, arch, listKeys(mr.Tarballs))
	}
	// The name is recomputed rather than trusted: it is how the signed
	// SHA256SUMS ties the tarball to the version shown to the user.
	if want := TarballName(rel.Version, arch); name != want {
		return rel, fmt.Errorf("release %s lists tarball %q for %s, want %q", rel.Version, name, arch, want)
	}
	rel.Tarball = name
	rel.URL = strings.TrimRight(base, "/") + "/" + rel.Version
	return rel, nil
}

func listKeys[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}
