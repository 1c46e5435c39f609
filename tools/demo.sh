#!/usr/bin/env bash
# From a clean clone to the demo: install what is missing, build, provision a
# SoftHSM token in ./demo-token, and list what is on it through p11-kit's
# proxy (the default module), the way a user with a smartcard would.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
demo=${P11S_DEMO_DIR:-$top/demo-token}

bash "$top/tools/install-deps.sh"
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$top/build" -j"$(nproc)"
rm -rf "$demo"
bash "$top/softhsm-conf/provision.sh" "$demo"
# shellcheck disable=SC1091
. "$demo/env"
export SOFTHSM2_CONF
echo
echo "== p11smime tokens"
"$top/build/p11smime" tokens "pkcs11:token=$P11S_TOKEN_LABEL"
echo
echo "== p11smime --pin-source file:$P11S_PIN_FILE list --login"
"$top/build/p11smime" --pin-source "file:$P11S_PIN_FILE" list --login "pkcs11:token=$P11S_TOKEN_LABEL"
echo
echo "The demo token is in $demo. To use it yourself:"
echo "  export SOFTHSM2_CONF=$SOFTHSM2_CONF"
echo "  $top/build/p11smime --pin-source file:$P11S_PIN_FILE list --login"
