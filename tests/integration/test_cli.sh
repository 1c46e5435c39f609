#!/usr/bin/env bash
# The command-line shape every script relies on: global options before the
# command, --help on every command, usage errors exit 2, --version.
. "$(dirname "$0")/lib.sh"

run_p11smime --help
assert_exit 0 "p11smime --help"
for c in tokens list validate sign verify encrypt decrypt; do
	assert_contains "$OUT" "  $c " "the global help names '$c'"
done
for code in "0  success" "1  a check did not pass" "2  usage error" "3  token, module, PIN" "4  bad input"; do
	assert_contains "$OUT" "$code" "the global help documents exit $code"
done

for c in tokens list validate sign verify encrypt decrypt; do
	run_p11smime "$c" --help
	assert_exit 0 "$c --help"
	assert_matches "$OUT" "^Usage: p11smime .*$c" "$c --help starts with its usage"
	run_p11smime "$c" --no-such-option
	assert_exit 2 "$c with an unknown option is a usage error"
	[ -s "$STDOUT" ] && fail "$c: a usage error printed on standard output" ||
		pass "$c: usage error on standard error only"
done

run_p11smime --version
assert_exit 0 "--version"
assert_matches "$OUT" '^p11smime [0-9]+\.[0-9]+\.[0-9]+$' "--version prints the version"

run_p11smime
assert_exit 2 "no command"
run_p11smime no-such-command
assert_exit 2 "an unknown command"
assert_contains "$ERR" "unknown command 'no-such-command'"

# Global options go before the command; a PIN source is checked up front,
# whatever the command, and never taken as a PIN itself.
run_p11smime --pin-source 123456 list
assert_exit 2 "a bare PIN is not a PIN source"
assert_contains "$ERR" "file:PATH, fd:N or env:VAR"
assert_not_contains "$ERR" "123456" "the rejected PIN source is not echoed as a PIN"
run_p11smime --pin-source pass:123456 sign --signer x@example.org
assert_exit 2 "pass: is refused: no PIN on the command line"

# A PIN given in a URI (pin-value, RFC 7512) is never repeated in messages,
# which end up in logs.
new_token
for args in "list pkcs11:token=nothere?pin-value=98765" \
	"list pkcs11:token=$TOKEN_LABEL;object=nothere?pin-value=98765" \
	"list pkcs11:token=$TOKEN_LABEL;bogus=1?pin-value=98765" \
	"tokens pkcs11:token=nothere?pin-value=98765" \
	"sign --signer pkcs11:token=$TOKEN_LABEL;object=nothere?pin-value=$PIN"; do
	# shellcheck disable=SC2086
	run_p11smime $args </dev/null
	[ "$RC" != 0 ] && pass "${args%% *}: refused (exit $RC)" || fail "${args%% *}: exit 0"
	assert_not_contains "$ERR" "98765" "${args%% *}: the pin-value is not echoed"
	assert_not_contains "$ERR" "$PIN" "${args%% *}: the pin-value is not echoed"
	assert_contains "$ERR" "pin-value=(hidden)" "${args%% *}: the URI is shown with the PIN hidden"
done

finish
