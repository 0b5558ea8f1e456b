#!/usr/bin/env bash
# Fails when deadcode finds an unreachable function in banger's own code
# (cmd/ and internal/) that scripts/deadcode-allow.txt does not list, or when
# that list names a function deadcode no longer reports (delete the line).
# Reachability starts at the programs under cmd/ and test/ (test mains such
# as test/crashd and test/fakefirecracker); helpers only _test.go files call
# are dead in production and so are reported, except the test/ packages
# themselves, which exist for tests.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
allow=scripts/deadcode-allow.txt
found=$(deadcode -filter '^github.com/banger-dev/banger/(cmd|internal)/' ./cmd/... ./test/... |
	sed -E 's/^([^:]+):[0-9]+:[0-9]+: unreachable func: (.*)$/\1 \2/' | sort -u)
allowed=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$allow" | sort -u)
new=$(comm -23 <(printf '%s\n' "$found") <(printf '%s\n' "$allowed") | sed '/^$/d')
stale=$(comm -13 <(printf '%s\n' "$found") <(printf '%s\n' "$allowed") | sed '/^$/d')
status=0
if [ -n "$new" ]; then
	echo "deadcode: unreachable functions (delete them, or make the test use the production path):"
	printf '%s\n' "$new" | sed 's/^/  /'
	status=1
fi
if [ -n "$stale" ]; then
	echo "deadcode: $allow lists functions that are no longer unreachable (delete these lines):"
	printf '%s\n' "$stale" | sed 's/^/  /'
	status=1
fi
exit $status
