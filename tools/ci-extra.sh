#!/usr/bin/env bash
# CI beyond tools/test.sh (which .ci/run runs first): the other compilers and
# flags, and the fuzz targets.
#   1. clang-14 -Werror (Debug), unit tests
#   2. hardening builds (-O2 -D_FORTIFY_SOURCE=2 ...; P11S_HARDEN): gcc, unit
#      tests; clang, build only
#   3. ThreadSanitizer (clang): the library, the CLI, the threads test, the
#      batch test and the agent's (--jobs, the agent's threads; P11S_TSAN; tests/integration/test_threads.sh, suppressions for
#      SoftHSM alone in tests/tsan.supp), the helper thread of large
#      messages (unit/test_offload; integration/test_output, test_verify);
#      about 3 minutes
#   4. the benchmarks kept buildable: every bench/*.sh parses, the C
#      helpers compile with -Werror, bench/mkfiles.c makes its files
#   5. the fuzz build (clang, libFuzzer, ASan+UBSan): every seed and past
#      crash once (ctest -L fuzz), then each target fuzzed for
#      P11S_FUZZ_SECONDS (default 25) on its corpus; a crash fails CI
# Build trees go under $P11S_CI_BUILD (default build-ci/ in the tree).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${P11S_CI_BUILD:-$top/build-ci}
secs=${P11S_FUZZ_SECONDS:-25}
jobs=$(nproc)

bash "$top/tools/install-deps.sh"
# Only here: the plain test run needs neither.
extra=(clang-14 libclang-rt-14-dev)
missing=()
for p in "${extra[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

step() { echo "==== ci-extra: $* ($(date -u +%H:%M:%S))"; }
build() { # DIR CC CMAKE-ARGS...
	local dir=$1 cc=$2
	shift 2
	CC=$cc cmake -S "$top" -B "$dir" -DP11S_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j"$jobs"
}

step "clang-14 -Werror, unit tests"
build "$out/clang" clang-14 -DCMAKE_BUILD_TYPE=Debug
(cd "$out/clang" && ctest -L unit --output-on-failure -j"$jobs")

step "hardening build, gcc, unit tests"
build "$out/harden-gcc" gcc -DCMAKE_BUILD_TYPE= -DP11S_HARDEN=ON
(cd "$out/harden-gcc" && ctest -L unit --output-on-failure -j"$jobs")

step "hardening build, clang-14"
build "$out/harden-clang" clang-14 -DCMAKE_BUILD_TYPE= -DP11S_HARDEN=ON -DP11S_TESTS=OFF

step "ThreadSanitizer build, threads, batch, agent and large-message tests"
CC=clang-14 cmake -S "$top" -B "$out/tsan" -DP11S_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DP11S_TSAN=ON >/dev/null
cmake --build "$out/tsan" -j"$jobs" --target p11smime_cli p11s_test_threads p11s_mock_pkcs11 test_offload
# Any report fails the test (TSan's exit code); none is suppressed in our code.
(cd "$out/tsan" && P11S_THREADS_N=8 TSAN_OPTIONS="suppressions=$top/tests/tsan.supp history_size=4" \
	ctest -R '^(integration/(provision-template|test_threads|test_batch|test_agent|test_output|test_verify)|unit/test_offload)$' \
	--output-on-failure)

# The benchmarks are not run here (they print figures, and take minutes):
# only kept from rotting, since nothing else builds them.
step "bench: scripts parse, helpers build (-Werror), mkfiles runs"
bwork=$(mktemp -d)
for s in "$top"/bench/*.sh; do
	bash -n "$s"
done
p11kit_cflags=$(pkg-config --cflags p11-kit-1)
for c in csign mkfiles import_certs spill_move; do
	# shellcheck disable=SC2086
	gcc -O2 -Wall -Wextra -Werror $p11kit_cflags -o "$bwork/$c" "$top/bench/$c.c" \
		-ldl -lpthread -lcrypto
done
# shellcheck disable=SC2086
gcc -fsyntax-only -Wall -Wextra -Werror -I"$top/include" $p11kit_cflags "$top/bench/decrypt_bench.c"
r=$("$bwork/mkfiles" "$bwork/files" 64 6144)
[ "$(find "$bwork/files" -type f -size 6144c | wc -l)" -eq 64 ] &&
	echo "$r" | grep -Eq '^[0-9.]+ [0-9.]+$' ||
	{ echo "ci-extra: bench/mkfiles.c made no 64 files of 6 KiB, or printed '$r'" >&2; exit 1; }
rm -rf "$bwork"

step "fuzz build, seeds and regressions"
build "$out/fuzz" clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DP11S_FUZZ=ON -DP11S_TESTS=OFF -DP11S_SHARED=OFF
(cd "$out/fuzz" && ctest -L fuzz --output-on-failure -j"$jobs")

step "fuzzing each target for ${secs} s"
fdir=$top/tests/fuzz
failed=()
for exe in "$out"/fuzz/tests/fuzz/fuzz_*; do
	name=$(basename "$exe")
	short=${name#fuzz_}
	work=$out/fuzz/run/$short
	rm -rf "$work"
	mkdir -p "$work/new" "$work/artifacts"
	dirs=("$work/new" "$fdir/corpus/$short")
	[ -d "$fdir/regress/$short" ] && dirs+=("$fdir/regress/$short")
	# New inputs go to $work/new, never into the tree; a crash lands in artifacts/.
	if "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$work/artifacts/" "${dirs[@]}" >"$work/log" 2>&1; then
		echo "$name: $(grep -E '^#[0-9]+.*DONE' "$work/log" | tail -n1)"
	else
		echo "$name: FAILED (log: $work/log)"
		grep -E 'ERROR|SUMMARY|Test unit written|runtime error' "$work/log" | head -n 10
		failed+=("$name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "ci-extra: fuzz targets that crashed or hung: ${failed[*]}" >&2
	echo "ci-extra: reproduce with: $out/fuzz/tests/fuzz/NAME ARTIFACT; add it to tests/fuzz/regress/NAME/" >&2
	exit 1
fi
step "done"
