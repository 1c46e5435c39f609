#!/usr/bin/env bash
# p11smime tokens: the provisioned token, its URI, JSON, module errors.
. "$(dirname "$0")/lib.sh"

new_token

run_p11smime tokens --help
assert_exit 0 "tokens --help"
assert_contains "$OUT" "Usage: p11smime [GLOBAL OPTIONS] tokens"
assert_contains "$OUT" "Exit codes"

run_p11smime tokens
assert_exit 0 "tokens"
assert_contains "$OUT" "Token '$TOKEN_LABEL'"
assert_matches "$OUT" "uri: +pkcs11:.*token=$TOKEN_LABEL"
assert_contains "$OUT" "initialised, login required, user PIN set"
# SoftHSM always offers one more slot with an uninitialised token.
assert_contains "$OUT" "NOT INITIALISED"

run_p11smime --json tokens
assert_exit 0 "--json tokens"
assert_json "$OUT" '.tokens | length == 2' "two slots with tokens"
assert_json "$OUT" "[.tokens[] | select(.label == \"$TOKEN_LABEL\")] | length == 1" "one p11smime-test"
t=".tokens[] | select(.label == \"$TOKEN_LABEL\")"
assert_json "$OUT" "$t | .manufacturer == \"SoftHSM project\" and .model == \"SoftHSM v2\"" "manufacturer, model"
assert_json "$OUT" "$t | (.serial | length) > 0 and (.uri | startswith(\"pkcs11:\"))" "serial, uri"
assert_json "$OUT" "$t | .flags.login_required and .flags.initialized and .flags.user_pin_initialized" "flags set"
assert_json "$OUT" "$t | (.flags.user_pin_locked or .flags.user_pin_final_try or .flags.protected_auth_path) | not" "flags clear"
assert_json "$OUT" '[.tokens[] | select(.flags.initialized | not)] | length == 1' "the free slot is uninitialised"
tok_uri=$(jq -r "$t | .uri" "$OUT")
free_uri=$(jq -r '.tokens[] | select(.flags.initialized | not) | .uri' "$OUT")

# Round trip: each token URI selects exactly that token.
run_p11smime --json tokens "$tok_uri"
assert_exit 0 "tokens TOKEN-URI"
assert_json "$OUT" ".tokens | length == 1 and .[0].uri == \"$tok_uri\"" "token URI selects exactly its token"
run_p11smime --json tokens "$free_uri"
assert_exit 0 "tokens FREE-URI"
assert_json "$OUT" ".tokens | length == 1 and .[0].uri == \"$free_uri\"" "free slot URI selects exactly it"

# Nothing matches; not a URI; a part p11-kit does not know.
run_p11smime tokens 'pkcs11:token=no-such-token'
assert_exit 3 "a URI matching no token"
assert_contains "$ERR" "no token matches pkcs11:token=no-such-token"
run_p11smime tokens 'token=p11smime-test'
assert_exit 2 "not a pkcs11: URI"
assert_contains "$ERR" "is not a PKCS#11 URI"
run_p11smime tokens 'pkcs11:tokn=p11smime-test'
assert_exit 2 "a misspelt attribute"
assert_contains "$ERR" "does not understand"

# Module errors: exit 3 at once, never a hang.
start=$(date +%s)
run_p11smime --module /nonexistent/module.so tokens
assert_exit 3 "bad module path"
assert_contains "$ERR" "cannot load PKCS#11 module /nonexistent/module.so"
libz=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 2>/dev/null || true)
if [ -n "$libz" ]; then
	run_p11smime --module "$libz" tokens
	assert_exit 3 "a library that is not a PKCS#11 module"
	assert_contains "$ERR" "is not a PKCS#11 module"
fi
P11SMIME_MODULE=/nonexistent/env.so run_p11smime tokens
assert_exit 3 "bad \$P11SMIME_MODULE"
assert_contains "$ERR" "/nonexistent/env.so"
elapsed=$(($(date +%s) - start))
[ "$elapsed" -lt 10 ] && pass "module errors came fast (${elapsed}s)" || fail "module errors took ${elapsed}s"
# --module wins over the environment.
P11SMIME_MODULE=/nonexistent/env.so run_p11smime --module "$SOFTHSM_MODULE" tokens
assert_exit 0 "--module overrides \$P11SMIME_MODULE"

# The default: p11-kit's proxy, which sees SoftHSM when it is registered.
if [ -f /usr/share/p11-kit/modules/softhsm2.module ]; then
	(
		unset P11SMIME_MODULE
		run_p11smime -v --json tokens "$tok_uri"
		assert_exit 0 "tokens through p11-kit's proxy"
		assert_contains "$ERR" "p11-kit-proxy"
		assert_json "$OUT" ".tokens | length == 1 and .[0].label == \"$TOKEN_LABEL\"" "the proxy shows the token"
		# Subshell: carry the counts back through the exit status.
		[ $_T_FAILED = 0 ]
	) || fail "proxy checks (see above)"
else
	echo "skip: softhsm2 is not registered with p11-kit"
fi

# A label is the token's to choose: an escape sequence in it must reach the
# terminal as text, not as a command to the terminal.
softhsm2-util --init-token --free --label "$(printf 'evil\033[2Jlabel')" \
	--pin 123456 --so-pin 12345678 >/dev/null
run_p11smime tokens "pkcs11:token=evil%1b%5b2Jlabel"
assert_exit 0 "a token whose label holds ESC is listed"
assert_contains "$OUT" 'evil\x1b[2Jlabel' "the ESC is shown as \\x1b"
if grep -q "$(printf '\033')" "$OUT"; then
	fail "a raw ESC reached the output"
else
	pass "no raw ESC in the output"
fi
run_p11smime --json tokens "pkcs11:token=evil%1b%5b2Jlabel"
assert_json "$OUT" '.tokens[0].label == "evil\u001b[2Jlabel"' "JSON keeps the label exact (escaped by the JSON encoder)"

finish
