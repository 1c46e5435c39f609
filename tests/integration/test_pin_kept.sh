#!/usr/bin/env bash
# The one copy of the PIN kept on purpose (docs/design.md, Secrets): a key
# with CKA_ALWAYS_AUTHENTICATE needs the PIN again after every C_SignInit
# and C_DecryptInit, and an fd: source cannot be read twice, so the
# context-specific logins use the copy of the user login's PIN: read once,
# asked for once.
. "$(dirname "$0")/lib.sh"

cd "$TEST_TMP" || exit 1
new_token
printf 'From: mock@example.org\nTo: bob@example.net\nSubject: kept\nContent-Type: text/plain\n\nhello\n' >msg.eml
printf 'Content-Type: text/plain\r\n\r\nsecret text\r\n' >pt.eml
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip "$TOKEN_DIR/mock/cert.pem" \
	-out enc.p7m 2>/dev/null || fail "openssl cms -encrypt"
mock_token always-auth

# ------------------------------------------------- sign, PIN read once from fd:
run_p11smime --pin-source fd:3 sign --signer mock@example.org -i msg.eml -o signed.eml 3<"$PIN_FILE"
assert_exit 0 "always-authenticate key: signs with the PIN from fd:3, read once"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1 pin_len=')" "sign: one user login"
assert_eq 1 "$(mock_log_count '^C_Login user_type=2 pin_len=')" "sign: one context-specific login, from the kept copy"
openssl cms -verify -in signed.eml -CAfile "$CA_PEM" -purpose any -out /dev/null 2>/dev/null &&
	pass "the signature verifies" || fail "the signature does not verify"

# ---------------------------------------------- decrypt, PIN read once from fd:
mock_log_reset
run_p11smime --pin-source fd:3 decrypt --entity --keep-line-ends -i enc.p7m -o dec.out 3<"$PIN_FILE"
assert_exit 0 "always-authenticate key: decrypts with the PIN from fd:3, read once"
cmp -s dec.out pt.eml && pass "decrypt: content equals the original" || fail "decrypt content"
assert_eq 1 "$(mock_log_count '^C_Login user_type=1 pin_len=')" "decrypt: one user login"
assert_eq 1 "$(mock_log_count '^C_Login user_type=2 pin_len=')" "decrypt: one context-specific login, from the kept copy"

# --------------------------------------------------------------- a wrong PIN
printf '000000\n' >wrong.pin
mock_log_reset
run_p11smime --pin-source "fd:3" sign --signer mock@example.org -i msg.eml -o wrong.eml 3<wrong.pin
assert_exit 3 "a wrong PIN from fd:3: exit 3"
assert_eq 1 "$(mock_log_count '^C_Login ')" "one login attempt, never a context-specific one"
assert_file_absent wrong.eml

finish
