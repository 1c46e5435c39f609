#!/usr/bin/env bash
# Module and token faults (issue 2): a module that cannot be loaded, tokens
# that are uninitialised, removed or refuse sessions.  Each gives exit 3 with
# a message and never hangs (libp11 0.4.12's PKCS11_login blocks forever
# when C_OpenSession fails; every run here is bounded by a 20 s timeout).
. "$(dirname "$0")/lib.sh"

export P11S_TIMEOUT=20
new_token

# ------------------------------------------------------ modules
run_p11smime --module /nonexistent/libnope-pkcs11.so tokens
assert_exit 3 "--module with a path that does not exist"
assert_contains "$ERR" "/nonexistent/libnope-pkcs11.so"

P11SMIME_MODULE=/nonexistent/libnope-pkcs11.so run_p11smime list
assert_exit 3 "P11SMIME_MODULE with a path that does not exist"
assert_contains "$ERR" "/nonexistent/libnope-pkcs11.so"

# A shared library that is not a PKCS#11 module.
notmod=$(find /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu -maxdepth 1 -name 'libz.so.1' 2>/dev/null | head -n1)
if [ -n "$notmod" ]; then
	run_p11smime --module "$notmod" tokens
	assert_exit 3 "--module with a library that is not a PKCS#11 module"
	assert_matches "$ERR" "."
fi

# A file that is not a library at all.
echo "not a module" >"$TEST_TMP/fake.so"
run_p11smime --module "$TEST_TMP/fake.so" list
assert_exit 3 "--module with a file that is not a library"

# A module whose C_Initialize fails (the mock cannot load its key).
mock_token ""
P11S_MOCK_KEY=$TEST_TMP/no-such-key.pem run_p11smime tokens
assert_exit 3 "a module whose C_Initialize fails"
assert_matches "$ERR" "."

# ------------------------------------------------------- tokens
for flag in uninitialized removed open-session-fails; do
	for cmd in "list --login" "list"; do
		mock_token "$flag"
		# shellcheck disable=SC2086
		run_p11smime --pin-source "file:$PIN_FILE" $cmd
		[ "$RC" != 124 ] && pass "$flag: $cmd returns" || fail "$flag: $cmd hung (killed after 20 s)"
		assert_exit 3 "$flag: $cmd exits 3"
		assert_matches "$ERR" "[a-z]"
		assert_eq 0 "$(mock_log_count '^C_Login')" "$flag: $cmd C_Login calls"
	done
	# Selecting the broken token by URI: still exit 3, still no hang.
	mock_token "$flag"
	run_p11smime --pin-source "file:$PIN_FILE" list --login "pkcs11:token=mock"
	assert_exit 3 "$flag: list --login pkcs11:token=mock exits 3"
done

# A slot whose description (the device's words) holds an escape sequence
# and a newline: the error quoting it shows both as \xNN, on one line.
mock_token uninitialized,hostile-slot
run_p11smime --pin-source "file:$PIN_FILE" list --login
assert_exit 3 "hostile-slot: an uninitialised token, named by its slot"
assert_contains "$ERR" 'is not initialised' "hostile-slot: the error"
assert_contains "$ERR" 'mock\x1b[2J\x0ap11smime: forged' "hostile-slot: its name escaped"
assert_not_contains "$ERR" "$(printf '\033')" "hostile-slot: no raw escape byte"
assert_eq 1 "$(grep -c . "$ERR")" "hostile-slot: one line, nothing forged"

# tokens still answers for a token that refuses sessions or is not
# initialised (it needs no session), and shows the uninitialised state.
mock_token uninitialized
run_p11smime tokens
[ "$RC" != 124 ] && pass "uninitialized: tokens returns" || fail "uninitialized: tokens hung"
mock_token open-session-fails
run_p11smime tokens
[ "$RC" != 124 ] && pass "open-session-fails: tokens returns" || fail "open-session-fails: tokens hung"
mock_token removed
run_p11smime tokens
[ "$RC" != 124 ] && pass "removed: tokens returns" || fail "removed: tokens hung"
assert_not_contains "$OUT" "token=mock"

# An object search that never ends, reached through a URI naming a label
# (the narrowed search, not the whole-token one): a module fault, not a hang.
mock_token find-forever
P11S_TIMEOUT=20 run_p11smime list 'pkcs11:object=mock;type=cert'
[ "$RC" != 124 ] || fail "find-forever: a search by label hung"
assert_exit 3 "find-forever: a search by label stops"
assert_contains "$ERR" "does not end"

# Control: the same mock without faults lists its certificate.
mock_token ""
run_p11smime --pin-source "file:$PIN_FILE" list --login
assert_exit 0 "healthy mock: list --login"
assert_contains "$OUT" "mock@example.org"

# A SoftHSM store with no initialised token (only SoftHSM's free slot).
mkdir -p "$TEST_TMP/empty/tokens"
sed "s|@TOKENDIR@|$TEST_TMP/empty/tokens|" "$P11S_SRCDIR/softhsm-conf/softhsm2.conf.in" >"$TEST_TMP/empty/softhsm2.conf"
SOFTHSM2_CONF=$TEST_TMP/empty/softhsm2.conf run_p11smime --module "$SOFTHSM_MODULE" \
	--pin-source "file:$PIN_FILE" list --login
[ "$RC" != 124 ] && pass "SoftHSM without a token: list --login returns" || fail "SoftHSM without a token: list --login hung"
assert_exit 3 "SoftHSM without an initialised token: list --login exits 3"
