#!/usr/bin/env bash
# Build, sign and publish a banger release for `banger update`.
#
#   scripts/publish-banger-release.sh [options] VERSION
#
# Options:
#   --channel NAME         point this channel at VERSION (default: stable; "" for none)
#   --min-compatible VER   oldest installed version that may update straight to VERSION
#   --arch ARCH            build for ARCH (repeatable; default: amd64)
#   --out DIR              where to put the release tree (default: dist/release)
#   --manifest FILE        merge into this manifest.json instead of the bucket's
#   --allow-dirty          build from a work tree with uncommitted changes
#   --dry-run              do everything but upload
#
# Environment:
#   BANGER_RELEASE_PUBKEY         release public key (cosign.pub, PEM). It is embedded
#                                 into banger; the script refuses to run without a
#                                 real one, since a build holding the placeholder
#                                 cannot verify any release.
#   BANGER_RELEASE_KEY            cosign --key for signing (cosign.key, or a KMS URI);
#                                 COSIGN_PASSWORD unlocks a key file.
#   BANGER_RELEASE_RCLONE_REMOTE  rclone remote holding the bucket (e.g. "r2")
#   BANGER_RELEASE_BUCKET         bucket (and optional prefix) served at the release
#                                 URL (e.g. "banger-releases"); both unneeded with
#                                 --dry-run --manifest, or --dry-run on a first release
#   COSIGN                        cosign binary (default: cosign in PATH); must be
#                                 COSIGN_VERSION below
#
# The release tree written to --out mirrors the server:
#   manifest.json
#   VERSION/SHA256SUMS  VERSION/SHA256SUMS.sig  VERSION/banger_<ver>_linux_<arch>.tar.gz
# Upload copies VERSION/ first (immutable: never overwrites a published file) and
# manifest.json last, so a client never sees a manifest naming missing files.
# docs/updating.md describes the format and the trust chain.
set -euo pipefail

# Pinned: sign-blob's flags and output format changed across major versions.
COSIGN_VERSION=v2.6.5
PLACEHOLDER_KEY=PLACEHOLDER-banger-release-key-not-embedded
MODULE=github.com/banger-dev/banger

die() {
	echo "publish-banger-release: $*" >&2
	exit 1
}
say() { echo "publish-banger-release: $*" >&2; }

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

channel=stable
min_compatible=""
arches=()
out=""
manifest_in=""
allow_dirty=0
dry_run=0
version=""
while [ $# -gt 0 ]; do
	case "$1" in
	--channel) channel=${2?--channel needs a value}; shift 2 ;;
	--min-compatible) min_compatible=${2?--min-compatible needs a value}; shift 2 ;;
	--arch) arches+=("${2?--arch needs a value}"); shift 2 ;;
	--out) out=${2?--out needs a value}; shift 2 ;;
	--manifest) manifest_in=${2?--manifest needs a value}; shift 2 ;;
	--allow-dirty) allow_dirty=1; shift ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		[ -z "$version" ] || die "only one VERSION, got $version and $1"
		version=$1
		shift
		;;
	esac
done
[ -n "$version" ] || die "missing VERSION (e.g. v0.2.0); see --help"
[ "${#arches[@]}" -gt 0 ] || arches=(amd64)

# Same rule as updater.NormalizeVersion: the version becomes a URL path and
# part of file names.
semver='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'
[[ $version != v* ]] && version="v$version"
[[ $version =~ $semver ]] || die "$version is not a release version (want vMAJOR.MINOR.PATCH[-pre])"
if [ -n "$min_compatible" ]; then
	[[ $min_compatible != v* ]] && min_compatible="v$min_compatible"
	[[ $min_compatible =~ $semver ]] || die "--min-compatible $min_compatible is not a release version"
fi
for a in "${arches[@]}"; do
	[[ $a =~ ^[a-z0-9]+$ ]] || die "--arch $a is not a GOARCH"
done

# The key check comes first: without a real public key nothing else matters.
pubkey=${BANGER_RELEASE_PUBKEY:-}
[ -n "$pubkey" ] || die "BANGER_RELEASE_PUBKEY is not set: refusing to build a release that would embed the placeholder key and could never verify an update"
[ -r "$pubkey" ] || die "BANGER_RELEASE_PUBKEY=$pubkey is not a readable file"
if grep -qF "$PLACEHOLDER_KEY" "$pubkey"; then
	die "$pubkey holds the placeholder key: refusing to publish a release that cannot verify updates"
fi
command -v openssl >/dev/null || die "openssl is needed to check the keys and verify the signature (apt-get install openssl)"
key_text=$(openssl pkey -pubin -in "$pubkey" -noout -text 2>/dev/null) ||
	die "$pubkey is not a PEM public key"
grep -q "prime256v1\|P-256" <<<"$key_text" || die "$pubkey is not an ECDSA P-256 key (cosign generate-key-pair makes one)"
# base64 of the PKIX DER on one line: the form -ldflags -X can carry.
key_b64=$(openssl pkey -pubin -in "$pubkey" -outform DER | base64 -w0)

signing_key=${BANGER_RELEASE_KEY:-}
[ -n "$signing_key" ] || die "BANGER_RELEASE_KEY is not set (the cosign private key or KMS URI that signs SHA256SUMS)"

cosign=${COSIGN:-cosign}
command -v "$cosign" >/dev/null ||
	die "cosign not found; install the pinned version with: go install github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
have=$("$cosign" version 2>/dev/null | awk '/^GitVersion:/ {print $2}')
[ "$have" = "$COSIGN_VERSION" ] ||
	die "cosign is ${have:-of unknown version}, this script is pinned to $COSIGN_VERSION: go install github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
for tool in go jq tar gzip sha256sum base64; do
	command -v "$tool" >/dev/null || die "$tool is needed"
done

remote=${BANGER_RELEASE_RCLONE_REMOTE:-}
bucket=${BANGER_RELEASE_BUCKET:-}
dest=""
if [ -n "$remote" ] || [ -n "$bucket" ]; then
	if [ -z "$remote" ] || [ -z "$bucket" ]; then
		die "set both BANGER_RELEASE_RCLONE_REMOTE and BANGER_RELEASE_BUCKET"
	fi
	dest="$remote:${bucket%/}"
fi
if [ "$dry_run" = 0 ]; then
	[ -n "$dest" ] || die "BANGER_RELEASE_RCLONE_REMOTE and BANGER_RELEASE_BUCKET name where to upload; use --dry-run to only build"
	command -v rclone >/dev/null || die "rclone is needed to upload (apt-get install rclone)"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "$allow_dirty" = 0 ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
	die "the work tree has uncommitted changes; commit them or pass --allow-dirty"
fi
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# Reproducible archives: entry times are the commit's, not the build's.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)

out=${out:-$root/dist/release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
reldir="$out/$version"
[ ! -e "$reldir" ] || die "$reldir already exists; remove it or choose another --out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The base manifest: given, else the bucket's, else a new one.
base="$work/manifest.base.json"
if [ -n "$manifest_in" ]; then
	cp "$manifest_in" "$base"
elif [ -n "$dest" ]; then
	if ! rclone cat "$dest/manifest.json" >"$base" 2>"$work/rclone.err"; then
		if grep -qi "not found\|doesn't exist\|no such" "$work/rclone.err"; then
			echo '{}' >"$base"
		else
			die "cannot read $dest/manifest.json: $(cat "$work/rclone.err")"
		fi
	fi
else
	say "no bucket configured: starting a new manifest"
	echo '{}' >"$base"
fi
jq -e 'type == "object" and ((.schema // 1) == 1)' "$base" >/dev/null ||
	die "the existing manifest is not a schema 1 manifest.json"
if jq -e --arg v "$version" '.releases[$v]?' "$base" >/dev/null; then
	die "$version is already published; releases are immutable, publish a new version"
fi
mkdir -p "$reldir"

ldflags="-s -w \
 -X $MODULE/internal/buildinfo.version=$version \
 -X $MODULE/internal/buildinfo.commit=$commit \
 -X $MODULE/internal/buildinfo.builtAt=$built_at \
 -X $MODULE/internal/updater.releasePublicKey=$key_b64"

tarballs='{}'
for arch in "${arches[@]}"; do
	name="banger_${version#v}_linux_${arch}.tar.gz"
	stage="$work/$arch"
	mkdir -p "$stage"
	say "building $version for linux/$arch"
	for pkg in banger bangerd banger-vsock-agent; do
		# Static binaries: the release runs on any Linux, and the guest agent
		# must be static anyway.
		CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$stage/$pkg" "./cmd/$pkg"
	done
	# The binary that verifies updates must carry exactly this key.
	grep -qF "$key_b64" "$stage/banger" || die "the built banger does not embed $pubkey"
	if [ "$arch" = "$(go env GOHOSTARCH)" ]; then
		got=$("$stage/banger" version --json | jq -r .version)
		[ "$got" = "$version" ] || die "the built banger reports version $got, want $version"
	fi
	# Exactly the three entries `banger update` accepts: plain names, regular
	# files, root-owned, fixed times.
	tar --create --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
		--mode=0755 --mtime="@$epoch" -C "$stage" -f - banger bangerd banger-vsock-agent |
		gzip -n -9 >"$reldir/$name"
	tarballs=$(jq --arg a "$arch" --arg n "$name" '.[$a] = $n' <<<"$tarballs")
done

(cd "$reldir" && LC_ALL=C sha256sum -- banger_*.tar.gz >SHA256SUMS)
say "signing SHA256SUMS with cosign $COSIGN_VERSION (no transparency log upload)"
"$cosign" sign-blob --yes --key "$signing_key" --tlog-upload=false \
	--output-signature "$reldir/SHA256SUMS.sig" "$reldir/SHA256SUMS" >/dev/null 2>"$work/cosign.err" ||
	die "cosign sign-blob failed: $(cat "$work/cosign.err")"
# Verify against the embedded public key with an implementation other than
# the signer's: the signature is base64 DER ECDSA over SHA-256, which is what
# banger checks.
base64 -d "$reldir/SHA256SUMS.sig" >"$work/sig.der" || die "SHA256SUMS.sig is not base64"
openssl dgst -sha256 -verify "$pubkey" -signature "$work/sig.der" "$reldir/SHA256SUMS" >/dev/null ||
	die "SHA256SUMS.sig does not verify against $pubkey: BANGER_RELEASE_KEY is not the embedded key's pair"
(cd "$reldir" && sha256sum --quiet --strict -c SHA256SUMS) || die "SHA256SUMS does not match the tarballs"

jq --arg v "$version" --arg ch "$channel" --arg at "$built_at" --arg min "$min_compatible" \
	--argjson tarballs "$tarballs" '
	.schema = 1
	| .channels = (.channels // {})
	| .releases = (.releases // {})
	| .releases[$v] = ({published_at: $at, tarballs: $tarballs}
		+ (if $min == "" then {} else {min_compatible_version: $min} end))
	| if $ch == "" then . else .channels[$ch] = $v end' "$base" >"$out/manifest.json"

if [ "$dry_run" = 1 ]; then
	say "dry run: release tree ready in $out (nothing uploaded)"
	exit 0
fi
say "uploading $version to $dest"
rclone copy --immutable "$reldir" "$dest/$version"
rclone check --one-way "$reldir" "$dest/$version"
rclone copyto "$out/manifest.json" "$dest/manifest.json"
say "published $version${channel:+ on $channel}"
