#!/usr/bin/env bash
# The PIN policy (issue 2): never retry a PIN, refuse without a login attempt
# when the token says locked / final try / to be changed, PIN pads, and the
# PIN sources.  Token flags SoftHSM cannot produce come from the mock module
# (tests/mock), whose call log shows whether C_Login was attempted; SoftHSM's
# calls are counted through OpenSC's pkcs11-spy.
. "$(dirname "$0")/lib.sh"

SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
new_token

# jq filter: how many objects of a class a --json list printed.
count_class() { jq "[.objects[] | select(.class == \"$1\")] | length" "$OUT" 2>/dev/null || echo none; }

# ------------------------------------------------- refusals, no C_Login
for flag in final-try locked to-be-changed; do
	mock_token "$flag"
	run_p11smime --pin-source "file:$PIN_FILE" list --login
	assert_exit 3 "$flag: list --login exits 3"
	case $flag in
	final-try) assert_matches -i "$ERR" "one more wrong PIN|final try|--allow-final-try" ;;
	locked) assert_matches -i "$ERR" "locked" ;;
	to-be-changed) assert_matches -i "$ERR" "change" ;;
	esac
	# Not vacuous: the tool did read this token's flags from the mock.
	[ "$(mock_log_count '^C_GetTokenInfo')" -gt 0 ] && pass "$flag: the tool asked the mock for the token flags" ||
		fail "$flag: the mock saw no C_GetTokenInfo (was it loaded?)"
	assert_eq 0 "$(mock_log_count '^C_Login')" "$flag: C_Login calls"
	assert_eq 0 "$(grep -c . "$OUT")" "$flag: lines on stdout"
done

# The explicit option allows the final try, and that is a single login.
mock_token final-try
run_p11smime --allow-final-try --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "final-try with --allow-final-try"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1 ')" "final-try + --allow-final-try: C_Login calls"
assert_eq 1 "$(count_class private-key)" "final-try + --allow-final-try: private keys listed"

# Wrong PIN on the final try: one attempt, exit 3.
mock_token final-try
echo 000000 >"$TEST_TMP/wrong-pin"
run_p11smime --allow-final-try --pin-source "file:$TEST_TMP/wrong-pin" list --login
assert_exit 3 "final try with a wrong PIN"
assert_eq 1 "$(mock_log_count '^C_Login')" "final try with a wrong PIN: C_Login calls"

# ------------------------------------------------------------- tokens flags
mock_token count-low
run_p11smime tokens
assert_exit 0 "tokens on a count-low token"
assert_matches -i "$OUT" "count[ _-]?low"
assert_contains "$OUT" "pkcs11:"
assert_eq 0 "$(mock_log_count '^C_Login')" "tokens: C_Login calls"
mock_token ""
run_p11smime tokens
assert_exit 0 "tokens on a healthy mock token"
# Negative control for the flag check above.
if grep -qiE "count[ _-]?low" "$OUT"; then fail "count low shown for a token without it"; else pass "no count-low flag on a healthy token"; fi
mock_token final-try
run_p11smime tokens
assert_matches -i "$OUT" "final[ _-]?try"
mock_token locked
run_p11smime tokens
assert_matches -i "$OUT" "locked"

# ----------------------------------------------------- wrong PIN: one try
mock_token ""
run_p11smime --pin-source "file:$TEST_TMP/wrong-pin" list --login
assert_exit 3 "mock: wrong PIN exits 3"
assert_matches "$ERR" "PIN"
assert_eq 1 "$(mock_log_count '^C_Login')" "mock: wrong PIN, C_Login calls"

# The same against SoftHSM, counted by pkcs11-spy between tool and module.
new_token
spy_log=$TEST_TMP/spy.log
export PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$spy_log
# pkcs11-spy leaks its set-up allocations and is unloaded before LSan
# reports, so they cannot be suppressed by name: no leak check for these runs
# (every other test covers p11smime's own leaks).
saved_asan=${ASAN_OPTIONS:-}
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
run_p11smime --module "$SPY" --pin-source "file:$TEST_TMP/wrong-pin" list --login
assert_exit 3 "SoftHSM: wrong PIN exits 3"
assert_matches "$ERR" "PIN"
assert_eq 1 "$(grep -c '^[0-9]*: C_Login$' "$spy_log")" "SoftHSM: wrong PIN, C_Login calls"
assert_contains "$spy_log" "CKR_PIN_INCORRECT"
# Control: with the right PIN the spy sees one successful login.
: >"$spy_log"
run_p11smime --module "$SPY" --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "SoftHSM through the spy, right PIN"
assert_eq 1 "$(grep -c '^[0-9]*: C_Login$' "$spy_log")" "SoftHSM: right PIN, C_Login calls"
unset PKCS11SPY PKCS11SPY_OUTPUT
export ASAN_OPTIONS=$saved_asan

# ------------------------------------------------------------ PIN pad
mock_token protected-auth
run_p11smime --json list --login
assert_exit 0 "protected auth path: logs in without a PIN source"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1 pin=NULL')" "protected auth: C_Login with a NULL PIN"
assert_eq 0 "$(mock_log_count '^C_Login .*pin_len=')" "protected auth: C_Login with a PIN"
assert_eq 1 "$(count_class private-key)" "protected auth: private keys listed"

# ---------------------------------------------------------- PIN sources
new_token
run_p11smime --json list
assert_exit 0 "SoftHSM: list without login"
assert_eq 0 "$(count_class private-key)" "SoftHSM without login: private keys (CKA_PRIVATE)"

run_p11smime --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "pin source file:"
assert_eq 4 "$(count_class private-key)" "file: private keys"

run_p11smime --pin-source fd:7 --json list --login 7<"$PIN_FILE"
assert_exit 0 "pin source fd:7"
assert_eq 4 "$(count_class private-key)" "fd: private keys"

export P11S_TEST_PIN=$PIN
run_p11smime --pin-source env:P11S_TEST_PIN --json list --login
assert_exit 0 "pin source env:"
assert_eq 4 "$(count_class private-key)" "env: private keys"
unset P11S_TEST_PIN

run_p11smime --json list --login "pkcs11:token=$TOKEN_LABEL?pin-source=file:$PIN_FILE"
assert_exit 0 "pin-source in the URI"
assert_eq 4 "$(count_class private-key)" "URI pin-source: private keys"

run_p11smime --json list --login "pkcs11:token=$TOKEN_LABEL?pin-value=$PIN"
assert_exit 0 "pin-value in the URI"
assert_eq 4 "$(count_class private-key)" "URI pin-value: private keys"

run_p11smime --pin-source env:P11S_NO_SUCH_VARIABLE_SET list --login
assert_exit 3 "env: naming an unset variable"

run_p11smime --pin-source bogus:x list --login
assert_exit 2 "a malformed pin source is a usage error"

# No source and no terminal: refuse, say how to give one, attempt nothing.
run_p11smime list --login
assert_exit 3 "no PIN source, no terminal"
assert_contains "$ERR" "--pin-source"
mock_token ""
run_p11smime list --login
assert_exit 3 "mock: no PIN source, no terminal"
assert_eq 0 "$(mock_log_count '^C_Login')" "no PIN source: C_Login calls"
