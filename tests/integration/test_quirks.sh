#!/usr/bin/env bash
# Quirks of real tokens (issue 13):
# - certificates kept private (CKA_PRIVATE=true, as some smartcards do):
#   decrypt logs in to find the recipient, list without --login says what
#   may be hidden;
# - keys with CKA_ALWAYS_AUTHENTICATE (mock module): one context-specific
#   login per operation, the PIN source asked again each time, fd: and env:
#   explained;
# - token labels with odd bytes (padding, ';', '%', UTF-8, an escape):
#   printed safely, usable in URIs.  (The TPM's NUL-padded model: test_tpm.sh.)
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
cd "$T" || exit 1
PINOPT=(--pin-source "file:$PIN_FILE")

# ======================================== certificates kept private (SoftHSM)
# pkcs11-tool 0.23 ignores --private for certificates; GnuTLS's p11tool marks them.
token_delete cert 01
GNUTLS_PIN=$PIN p11tool --provider "$SOFTHSM_MODULE" --login --write --mark-private \
	--load-certificate "$CERTS_DIR/rsa2048.pem" --label rsa2048 --id 01 \
	"pkcs11:token=$TOKEN_LABEL" >p11tool.log 2>&1 || { cat p11tool.log; fail "p11tool --write --mark-private"; }
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --list-objects --type cert 2>/dev/null |
	grep -q "label: *rsa2048" && fail "the private certificate is visible without login" ||
	pass "rsa2048's certificate is private (hidden from pkcs11-tool without login)"

run_p11smime list
assert_exit 0 "list without --login"
assert_not_contains "$OUT" "Certificate 'rsa2048'"
assert_contains "$OUT" "(not logged in: private objects are hidden, the keys and any certificates the token keeps private; list --login shows them)"
run_p11smime "${PINOPT[@]}" list --login
assert_contains "$OUT" "Certificate 'rsa2048'"
assert_not_contains "$OUT" "not logged in: private objects are hidden"
run_p11smime validate --no-login
assert_contains "$OUT" "any certificates the token keeps private"

printf 'From: alice@example.org\nTo: rsa2048@example.org\nSubject: s\nContent-Type: text/plain\n\nPrivate certificate, public key\n' >msg.eml
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" -i msg.eml -o enc.eml
assert_exit 0 "encrypt to rsa2048 (certificate from a file)"
# The token has public certificates (rsa3072, p256, p384), none a recipient:
# the private one shows after the login.
run_p11smime "${PINOPT[@]}" --json decrypt -i enc.eml -o dec.eml
assert_exit 0 "decrypt finds the recipient among private certificates"
assert_contains dec.eml "Private certificate, public key"
assert_json "$OUT" '.key_uri | test("object=rsa2048;type=private")' "the key of the private certificate decrypted"
run_p11smime decrypt -i enc.eml -o dec2.eml
assert_exit 3 "without a PIN: exit 3"
assert_contains "$ERR" "no certificate on the token is a recipient of this message (none of the public ones; the login to look for private ones failed"
assert_contains "$ERR" "--pin-source"
assert_file_absent dec2.eml
# sign logs in first: the private certificate is found by its address.
printf 'From: rsa2048@example.org\nTo: bob@example.org\nSubject: s\nContent-Type: text/plain\n\nhi\n' >out.eml
run_p11smime "${PINOPT[@]}" sign --signer rsa2048@example.org -i out.eml -o signed.eml
assert_exit 0 "sign with the key of a private certificate"
openssl cms -verify -in signed.eml -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
	pass "openssl verifies it" || fail "openssl cms -verify"

# ================================== CKA_ALWAYS_AUTHENTICATE (mock module)
mock_token always-auth
printf 'From: mock@example.org\nTo: bob@example.org\nSubject: s\nContent-Type: text/plain\n\nalways\n' >m.eml
ctx_logins() { mock_log_count '^C_Login user_type=2 '; }

run_p11smime "${PINOPT[@]}" sign --signer mock@example.org -i m.eml -o m-signed.eml
assert_exit 0 "sign with an always-authenticate key (file:)"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1 ')" "one user login"
assert_eq 1 "$(ctx_logins)" "one context-specific login for the one signature"
assert_eq 1 "$(mock_log_count '^C_Sign ')" "one C_Sign"
openssl cms -verify -in m-signed.eml -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
	pass "openssl verifies the mock's signature" || fail "openssl cms -verify (mock)"

printf 'From: bob@example.org\nTo: mock@example.org\nSubject: s\nContent-Type: text/plain\n\nfor the mock\n' >mp.eml
run_p11smime encrypt --recipient "$TOKEN_DIR/mock/cert.pem" -i mp.eml -o m-enc.eml
mock_log_reset
run_p11smime "${PINOPT[@]}" decrypt -i m-enc.eml -o m-dec.eml
assert_exit 0 "decrypt with an always-authenticate key (file:)"
assert_contains m-dec.eml "for the mock"
assert_eq 1 "$(ctx_logins)" "one context-specific login for the one decryption"

# The PIN file read again for each operation, a change between two
# operations seen: tests/unit/test_always_auth.c (two operations need one
# process).

# fd: one PIN per line.  One line serves the user login only.
mock_log_reset
run_p11smime --pin-source fd:3 sign --signer mock@example.org -i m.eml -o fd1.eml 3<"$PIN_FILE"
assert_exit 3 "fd: with one line: exit 3"
assert_contains "$ERR" "the key asks for its PIN on every use (CKA_ALWAYS_AUTHENTICATE)"
assert_contains "$ERR" "a descriptor gives one PIN per line: one line for the token login and one for each use of such a key"
assert_eq 0 "$(ctx_logins)" "no context-specific login without a PIN"
assert_file_absent fd1.eml
printf '%s\n%s\n' "$PIN" "$PIN" >two.pin
mock_log_reset
run_p11smime --pin-source fd:3 sign --signer mock@example.org -i m.eml -o fd2.eml 3<two.pin
assert_exit 0 "fd: with two lines: the login and the signature"
assert_eq 1 "$(ctx_logins)" "one context-specific login"

# env: is gone once read (children do not inherit it).
P11S_TEST_PIN=$PIN run_p11smime --pin-source env:P11S_TEST_PIN decrypt -i m-enc.eml -o env.eml
assert_exit 3 "env: serves the user login only: exit 3"
assert_contains "$ERR" "env: serves one login only"
assert_file_absent env.eml

# A pin-value in the URI is for the token login; the key needs a source.
run_p11smime sign --signer "pkcs11:object=mock;type=cert?pin-value=$PIN" -i m.eml -o pv.eml
assert_exit 3 "pin-value only: exit 3"
assert_contains "$ERR" "a URI's pin-value serves the token login only"
# The URI's pin-source is read again.
run_p11smime sign --signer "pkcs11:object=mock;type=cert?pin-source=file:$PIN_FILE" -i m.eml -o ps.eml
assert_exit 0 "the URI's pin-source serves both logins"

# ===================================== token labels with odd bytes
ODD=$(printf 'odd;label %%2 \xc3\xbc\x1b[31m')
mkdir -p odd/tokens
printf 'directories.tokendir = %s/odd/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" >odd/softhsm2.conf
export SOFTHSM2_CONF=$T/odd/softhsm2.conf
export P11SMIME_MODULE=$SOFTHSM_MODULE
softhsm2-util --init-token --free --label "$ODD" --so-pin 12345678 --pin 123456 >/dev/null ||
	fail "softhsm2-util --init-token with an odd label"
run_p11smime tokens
assert_exit 0 "tokens with an odd label"
assert_contains "$OUT" "Token 'odd;label %2 ü\\x1b[31m'"
if LC_ALL=C grep -q "$(printf '\x1b')" "$OUT"; then fail "an escape byte reached the terminal"; else pass "no escape byte printed"; fi
URI_TOKEN='token=odd%3Blabel%20%252%20%C3%BC%1B%5B31m'
assert_contains "$OUT" "$URI_TOKEN"
run_p11smime --json tokens
assert_json "$OUT" ".tokens[0].label == \"odd;label %2 ü\\u001b[31m\"" "JSON: the label exactly, escaped by JSON"
# The label is padded with spaces to 32 bytes on the token; the URI without them selects it.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out odd.key 2>/dev/null
openssl pkey -in odd.key -outform DER -out odd.der
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$ODD" --login --pin 123456 --write-object odd.der \
	--type privkey --id 07 --label k >/dev/null 2>&1 || fail "key onto the odd token"
run_p11smime --pin-source "file:$PIN_FILE" list --login "pkcs11:$URI_TOKEN;type=private"
assert_exit 0 "the printed URI selects the odd token"
assert_contains "$OUT" "Private key 'k'"
run_p11smime list "pkcs11:token=odd%3Blabel"
assert_exit 3 "a prefix of the label is not the label"

finish
