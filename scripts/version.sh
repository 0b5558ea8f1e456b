#!/bin/sh
# Prints the version `make build` stamps into banger's binaries.
#
# Only a clean checkout of a tagged commit is a release version; anything
# else (untagged commits, commits after a tag, uncommitted changes, no git)
# is a dev build, which drift checks (`banger doctor`, the CLI) stay quiet
# about. The commit is stamped separately, so a dev build is still traceable.
# Release builds (scripts/publish-banger-release.sh) set the version
# explicitly and do not use this.
set -u
cd "${1:-.}" 2>/dev/null || { echo dev; exit 0; }
tag=$(git describe --tags --exact-match HEAD 2>/dev/null) || { echo dev; exit 0; }
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	echo dev
	exit 0
fi
echo "$tag"
