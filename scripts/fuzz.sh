#!/usr/bin/env bash
# Runs every Fuzz target of the repository for FUZZTIME each (go test
# -fuzz takes one target at a time), one after the other, and prints the
# executions each made. Targets are found in the tracked *_test.go files;
# the ones named in FUZZ_REQUIRED must be among them, so a rename cannot
# drop one silently. Any failure stops the run with go test's report (the
# failing input lands in the package's testdata/fuzz/<target>/).
#
#   FUZZTIME=60s      how long each target runs
#   FUZZMINIMIZE=10s  how long the fuzzer may spend shrinking an input
#   FUZZ=regexp       only the targets whose name matches
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZE=${FUZZMINIMIZE:-10s}
FUZZ_REQUIRED=${FUZZ_REQUIRED:-"FuzzDecode FuzzDecodeBinary FuzzDecodeJSON FuzzDecodeEntries FuzzScanner FuzzApply"}

declare -a targets=()
while IFS= read -r f; do
	dir=$(dirname "$f")
	while IFS= read -r name; do
		targets+=("$dir $name")
	done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f")
done < <(git ls-files '*_test.go' | sort)

for want in $FUZZ_REQUIRED; do
	found=0
	for t in "${targets[@]}"; do [[ ${t#* } == "$want" ]] && found=1; done
	if [[ $found == 0 ]]; then
		echo "fuzz: target $want not found in any *_test.go" >&2
		exit 1
	fi
done

summary=()
for t in "${targets[@]}"; do
	dir=${t% *} name=${t#* }
	if [[ -n ${FUZZ:-} && ! $name =~ $FUZZ ]]; then continue; fi
	echo "== $name (./$dir) for $FUZZTIME"
	log=$(mktemp)
	if ! (cd "$dir" && $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZE" .) 2>&1 | tee "$log"; then
		rm -f "$log"
		echo "fuzz: $name failed" >&2
		exit 1
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	rm -f "$log"
	summary+=("$(printf '%-20s %-45s %s execs' "$name" "./$dir" "${execs:-?}")")
done
echo
echo "fuzz: every target ran $FUZZTIME without a failure"
printf '%s\n' "${summary[@]}"
