#!/usr/bin/env bash
# Two tokens behind one module, each with its own PIN (a smartcard and a
# YubiKey, say).  An e-mail address names no token, so p11smime must not
# log in to both with one PIN: that would cost the other token a try (and
# fail).  It finds the certificate among the public objects, logs in to the
# token holding it only, and otherwise says why without any login.  Logins
# are counted by pkcs11-spy between p11smime and SoftHSM.
. "$(dirname "$0")/lib.sh"

SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
new_token
cd "$TEST_TMP" || exit 1
# The second token, with another PIN; nothing on it yet.
softhsm2-util --init-token --free --label second --pin 654321 --so-pin 87654321 >/dev/null
printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: two\n\nHello.\n' >mail.eml
openssl cms -encrypt -in mail.eml -aes-256-cbc -recip "$CERTS_DIR/rsa2048.pem" -out for-rsa.p7m 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out outsider.key 2>/dev/null
SAN_EMAIL=outsider@example.org ca_issue key:outsider.key outsider.pem smime-rsa >/dev/null
openssl cms -encrypt -in mail.eml -aes-256-cbc -recip outsider.pem -out for-outsider.p7m 2>/dev/null

spy_log=$TEST_TMP/spy.log
export PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$spy_log
# pkcs11-spy leaks its set-up allocations (see test_pin_policy.sh).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
logins() { grep -c '^[0-9]*: C_Login$' "$spy_log"; }
P=(--module "$SPY" --pin-source "file:$PIN_FILE")

run_p11smime "${P[@]}" tokens
assert_exit 0 "two tokens listed"
assert_contains "$OUT" "second"

: >"$spy_log"
run_p11smime "${P[@]}" sign --signer rsa2048@example.org -i mail.eml -o signed.eml
assert_exit 0 "sign by address with two tokens"
assert_eq 1 "$(logins)" "one C_Login: the token holding the certificate"
assert_not_contains "$spy_log" "CKR_PIN_INCORRECT"
openssl cms -verify -CAfile "$CA_PEM" -in signed.eml -out /dev/null 2>/dev/null &&
	pass "the signature verifies" || fail "the signature does not verify"

: >"$spy_log"
run_p11smime "${P[@]}" sign --signer nobody@example.org -i mail.eml -o nobody.eml
assert_exit 3 "an address on neither token: exit 3"
assert_contains "$ERR" "not logging in to all of them with one PIN"
assert_eq 0 "$(logins)" "and no C_Login at all"
assert_file_absent nobody.eml

: >"$spy_log"
run_p11smime "${P[@]}" decrypt -i for-rsa.p7m -o plain.eml
assert_exit 0 "decrypt with two tokens"
assert_contains plain.eml "Hello."
assert_eq 1 "$(logins)" "one C_Login for decrypt"

: >"$spy_log"
run_p11smime "${P[@]}" decrypt -i for-outsider.p7m -o plain2.eml
assert_exit 3 "decrypt of a message for nobody on the tokens: exit 3"
assert_contains "$ERR" "not logging in to the 2 tokens with one PIN"
assert_eq 0 "$(logins)" "and no C_Login"

# The same certificate on both tokens: ambiguous, said before any login.
openssl x509 -in "$CERTS_DIR/rsa2048.pem" -outform DER -out rsa2048.der
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label second --login --pin 654321 \
	--write-object rsa2048.der --type cert --id 01 --label copy >/dev/null 2>&1
: >"$spy_log"
run_p11smime "${P[@]}" sign --signer rsa2048@example.org -i mail.eml -o amb.eml
assert_exit 3 "the address on both tokens: exit 3"
assert_contains "$ERR" "matches 2 certificates"
assert_contains "$ERR" "token=second"
assert_eq 0 "$(logins)" "and no C_Login"

# Naming the token still logs in to it alone.
: >"$spy_log"
run_p11smime "${P[@]}" sign --signer "pkcs11:token=$TOKEN_LABEL;id=%01;type=cert" -i mail.eml -o uri.eml
assert_exit 0 "sign by a URI naming the token"
assert_eq 1 "$(logins)" "one C_Login"
unset PKCS11SPY PKCS11SPY_OUTPUT
finish
