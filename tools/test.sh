#!/usr/bin/env bash
# The whole test suite: install what is missing, build with AddressSanitizer
# and UndefinedBehaviorSanitizer, run every unit and SoftHSM integration test.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${P11S_TEST_BUILD:-$top/build-test}

bash "$top/tools/install-deps.sh"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DP11S_SANITIZE=ON -DP11S_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)" "$@"
