#!/usr/bin/env bash
# RSA-PSS and RSA-OAEP with the token's own mechanisms (issue 13):
# CKM_RSA_PKCS_PSS and CKM_RSA_PKCS_OAEP are preferred over raw RSA
# (CKM_RSA_X_509, OpenSSL doing the padding), raw RSA is the fallback when
# the token refuses the parameters (SoftHSM's OAEP takes SHA-1 only), and a
# token offering neither says so.  pkcs11-spy shows which mechanism ran.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

cd "$TEST_TMP" || exit 1
MSG=$TEST_TMP/msg.eml
printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: native\nContent-Type: text/plain\n\nhello\n' >"$MSG"
printf 'Content-Type: text/plain\r\n\r\nsecret text\r\n' >pt.eml

# mechs: "INIT MECHANISM RV" for each C_SignInit/C_DecryptInit in the spy log.
mechs() {
	perl -ne '
		if (/^\d+: (C_\w+)/) { flush(); $fn = $1; $m = $rv = ""; next }
		$m = $1 if /^\[in\] pMechanism->type = (\S+)/;
		$rv = $1 if /^Returned:\s+\d+ (\S+)/;
		sub flush { print "$fn $m $rv\n" if $fn =~ /^C_(Sign|Decrypt)Init$/; $fn = "" }
		END { flush() }' "$SPY_LOG"
}

# pss NAME WANT_MECH: sign --pss through the spy; only WANT_MECH was asked for.
pss() {
	local name=$1 want=$2
	spy_on
	run_p11smime --pin-source "file:$PIN_FILE" --json sign --signer rsa2048@example.org --pss -i "$MSG" -o "$name.eml"
	spy_off
	assert_exit 0 "$name: sign --pss"
	assert_json "$OUT" ".mechanism == \"$want\"" "$name: the report names $want"
	assert_eq "C_SignInit $want CKR_OK" "$(mechs)" "$name: one C_SignInit, with $want"
	openssl cms -verify -in "$name.eml" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$name: openssl cms verifies it" || fail "$name: openssl cms does not verify it"
	openssl cms -cmsout -print -in "$name.eml" 2>/dev/null | grep -q 'rsassaPss' &&
		pass "$name: an RSASSA-PSS signature" || fail "$name: not an RSASSA-PSS signature"
}

# oaep NAME WANT_MECH WANT_INITS [openssl -keyopt ...]: decrypt an OAEP message through the spy.
oaep() {
	local name=$1 want=$2 inits=$3
	shift 3
	openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip "$CERTS_DIR/rsa2048.pem" \
		-keyopt rsa_padding_mode:oaep "$@" -out "$name.p7m" 2>/dev/null || { fail "$name: openssl cms -encrypt"; return; }
	spy_on
	run_p11smime --pin-source "file:$PIN_FILE" --json decrypt --entity --keep-line-ends -i "$name.p7m" -o "$name.out"
	spy_off
	assert_exit 0 "$name: decrypts"
	cmp -s "$name.out" pt.eml && pass "$name: the original bytes" || fail "$name: content differs"
	assert_json "$OUT" ".mechanism == \"$want\"" "$name: the report names $want"
	assert_eq "$inits" "$(mechs | tr '\n' ';')" "$name: the token was asked for $inits"
}

# ------------------------------------------------------- a full SoftHSM slot
new_token
pss full-pss CKM_RSA_PKCS_PSS
oaep full-oaep1 CKM_RSA_PKCS_OAEP "C_DecryptInit CKM_RSA_PKCS_OAEP CKR_OK;"
# SoftHSM's OAEP takes SHA-1 only: refused, then raw RSA.
oaep full-oaep256 CKM_RSA_X_509 \
	"C_DecryptInit CKM_RSA_PKCS_OAEP CKR_ARGUMENTS_BAD;C_DecryptInit CKM_RSA_X_509 CKR_OK;" \
	-keyopt rsa_oaep_md:sha256
run_p11smime --pin-source "file:$PIN_FILE" -v sign --signer rsa2048@example.org --pss -i "$MSG" -o v.eml
assert_exit 0
assert_contains "$ERR" "CKM_RSA_PKCS_PSS"
run_p11smime --pin-source "file:$PIN_FILE" -v decrypt --entity -i full-oaep1.p7m -o /dev/null
assert_exit 0
assert_contains "$ERR" "token mechanism: CKM_RSA_PKCS_OAEP"

# ------------------------------- a slot without raw RSA (a FIPS-mode HSM's)
new_token
echo "slots.mechanisms = CKM_RSA_PKCS,CKM_RSA_PKCS_PSS,CKM_RSA_PKCS_OAEP,CKM_ECDSA,CKM_ECDH1_DERIVE" >>"$SOFTHSM2_CONF"
pss restricted-pss CKM_RSA_PKCS_PSS
oaep restricted-oaep1 CKM_RSA_PKCS_OAEP "C_DecryptInit CKM_RSA_PKCS_OAEP CKR_OK;"
# OAEP with SHA-256: the token refuses it and has no raw RSA to fall back on.
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip "$CERTS_DIR/rsa2048.pem" \
	-keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -out r256.p7m 2>/dev/null
run_p11smime --pin-source "file:$PIN_FILE" decrypt --entity -i r256.p7m -o r256.out
[ "$RC" != 0 ] && pass "restricted-oaep256: fails (exit $RC)" || fail "restricted-oaep256: exit 0"
assert_file_absent r256.out
# PKCS#1 v1.5 and ECDSA are still there.
run_p11smime --pin-source "file:$PIN_FILE" --json sign --signer p256@example.org -i "$MSG" -o ec.eml
assert_exit 0 "restricted: ECDSA signs"
assert_json "$OUT" '.mechanism == "CKM_ECDSA"'
run_p11smime --pin-source "file:$PIN_FILE" --json sign --signer rsa2048@example.org -i "$MSG" -o v15.eml
assert_exit 0 "restricted: PKCS#1 v1.5 signs"
assert_json "$OUT" '.mechanism == "CKM_RSA_PKCS"'

# ---------------------------------------- a slot with neither, said plainly
new_token
echo "slots.mechanisms = CKM_RSA_PKCS,CKM_ECDSA,CKM_ECDH1_DERIVE" >>"$SOFTHSM2_CONF"
run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org --pss -i "$MSG" -o none.eml
assert_exit 3 "neither PSS nor raw RSA: exit 3"
assert_contains "$ERR" "no CKM_RSA_PKCS_PSS"
assert_contains "$ERR" "no CKM_RSA_X_509"
assert_file_absent none.eml
run_p11smime --pin-source "file:$PIN_FILE" decrypt --entity -i full-oaep1.p7m -o none.out
assert_exit 3 "neither OAEP nor raw RSA: exit 3"
assert_contains "$ERR" "no CKM_RSA_PKCS_OAEP"
assert_contains "$ERR" "no CKM_RSA_X_509"
assert_file_absent none.out

finish
