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
# A URI (or none) matching both tokens, one PIN: refused before any login,
# the tokens listed; naming one logs in to it alone.
: >"$spy_log"
run_p11smime "${P[@]}" list --login
assert_exit 3 "list --login, two tokens, one PIN: exit 3"
assert_contains "$ERR" "2 tokens need a login and one PIN is given (--pin-source)"
assert_contains "$ERR" "token=second"
assert_contains "$ERR" "token=$TOKEN_LABEL"
assert_eq 0 "$(logins)" "and no C_Login"
: >"$spy_log"
run_p11smime "${P[@]}" list --login "pkcs11:token=$TOKEN_LABEL"
assert_exit 0 "list --login naming the token"
assert_contains "$OUT" "rsa2048"
assert_eq 1 "$(logins)" "one C_Login"
: >"$spy_log"
run_p11smime "${P[@]}" sign --signer "pkcs11:id=%01;type=cert" -i mail.eml -o amb2.eml
assert_exit 3 "a URI without the token, on both tokens: exit 3"
assert_contains "$ERR" "2 tokens need a login"
assert_eq 0 "$(logins)" "and no C_Login"
assert_file_absent amb2.eml
: >"$spy_log"
run_p11smime "${P[@]}" validate
assert_exit 3 "validate, two tokens, one PIN: exit 3"
assert_contains "$ERR" "2 tokens need a login"
assert_eq 0 "$(logins)" "and no C_Login"
: >"$spy_log"
run_p11smime --module "$SPY" --pin-source "file:$PIN_FILE" list --login "pkcs11:token=$TOKEN_LABEL;pin-value=654321"
assert_exit 0 "--pin-source wins over the URI's pin-value, one token"
# The URI's own pin-value is one PIN too.
: >"$spy_log"
run_p11smime --module "$SPY" list --login "pkcs11:pin-value=$(cat "$PIN_FILE")"
assert_exit 3 "a pin-value in a URI matching both tokens: exit 3"
assert_contains "$ERR" "one PIN is given (the URI's pin)"
assert_eq 0 "$(logins)" "and no C_Login"

# The agent and the milter serve every token they see: --token limits that.
: >"$spy_log"
run_p11smime "${P[@]}" agent -D
assert_exit 3 "agent without --token, two tokens: exit 3"
assert_contains "$ERR" "2 tokens need a login"
assert_eq 0 "$(logins)" "and no C_Login"
run_p11smime "${P[@]}" agent -D --token "pkcs11:token=$TOKEN_LABEL;id=%01"
assert_exit 2 "agent --token with an object attribute: usage error"
assert_contains "$ERR" "a token URI names only the token"
: >"$spy_log"
env=$("$P11SMIME" "${P[@]}" agent --token "pkcs11:token=$TOKEN_LABEL") &&
	eval "$env" && pass "agent --token starts" || fail "agent --token does not start"
if [ -n "${P11SMIME_AGENT_PID:-}" ]; then
	at_exit "kill -TERM $P11SMIME_AGENT_PID 2>/dev/null"
	run_p11smime --module "$SPY" decrypt -i for-rsa.p7m -o agent-plain.eml
	assert_exit 0 "decrypt through the agent of one token"
	assert_contains agent-plain.eml "Hello."
	run_p11smime --module "$SPY" decrypt -i for-outsider.p7m -o agent-none.eml
	assert_exit 3 "a message for nobody on the agent's token: exit 3"
	assert_eq 1 "$(logins)" "the agent logged in once, to its token only"
	kill -TERM "$P11SMIME_AGENT_PID"
	unset P11SMIME_AGENT_SOCK P11SMIME_AGENT_PID
fi
: >"$spy_log"
run_p11smime "${P[@]}" milter --listen "unix:$TEST_TMP/m.sock"
assert_exit 3 "milter without --token, two tokens: exit 3"
assert_contains "$ERR" "2 tokens need a login"
assert_eq 0 "$(logins)" "and no C_Login"
"$P11SMIME" "${P[@]}" milter --listen "unix:$TEST_TMP/m.sock" --token "pkcs11:token=$TOKEN_LABEL" \
	</dev/null >milter.log 2>&1 &
mpid=$!
for _ in $(seq 300); do
	grep -q "listening on" milter.log && break
	kill -0 "$mpid" 2>/dev/null || break
	sleep 0.1
done
assert_contains milter.log "listening on"
assert_contains milter.log "rsa2048@example.org"
kill -TERM "$mpid" 2>/dev/null
wait "$mpid"
assert_eq 1 "$(logins)" "milter --token: one C_Login, its token's"
unset PKCS11SPY PKCS11SPY_OUTPUT
finish
