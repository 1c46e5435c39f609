#!/usr/bin/env bash
# One signature, one process: the module is initialised once, the token is
# searched once by the URI's id, and no object the signature does not need
# is read, however many certificates the token holds (issue 11).  By
# address, only certificates are read (no key of another certificate), and
# the address still matches exactly, in any case.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
MSG=$TEST_TMP/msg.eml
printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: one\nContent-Type: text/plain\n\nhello\n' >"$MSG"
URI="pkcs11:token=$TOKEN_LABEL;id=%01;type=cert"

# The objects C_GetAttributeValue was asked about, one handle a line.
objects_read() { awk '/^[0-9]+: C_GetAttributeValue/ { g = 1; next } /^[0-9]+: C_/ { g = 0 } g && /^\[in\] hObject = / { print $4 }' "$SPY_LOG" | sort -u; }

signed_through_spy() { # NAME SIGNER
	spy_on
	run_p11smime --pin-source "file:$PIN_FILE" sign --signer "$2" -i "$MSG" -o "$TEST_TMP/$1.eml"
	spy_off
	assert_exit 0 "$1: signed"
	openssl cms -verify -in "$TEST_TMP/$1.eml" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$1: verifies" || fail "$1: does not verify"
}

by_uri() { # NAME
	signed_through_spy "$1" "$URI"
	assert_eq 1 "$(spy_count '^[0-9]+: C_Initialize')" "$1: the module initialised once"
	assert_eq 1 "$(spy_count '^[0-9]+: C_FindObjectsInit')" "$1: one search"
	assert_eq 1 "$(awk '/^[0-9]+: C_FindObjectsInit/ { f = 1; next } /^[0-9]+: C_/ { f = 0 } f && /CKA_ID/' "$SPY_LOG" | wc -l)" \
		"$1: the search is by the URI's CKA_ID"
	# The certificate, its private key and its public key: nothing else.
	assert_eq 3 "$(objects_read | wc -l)" "$1: only the three objects with id 01 are read"
	assert_eq 1 "$(spy_count '^[0-9]+: C_Login')" "$1: one login"
	assert_eq 1 "$(spy_count '^[0-9]+: C_Sign$')" "$1: one C_Sign"
}

by_uri uri-plain

# A few more certificates, without keys: the same work by URI.
for i in 1 2 3; do
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TEST_TMP/k$i.pem" 2>/dev/null
	openssl pkey -in "$TEST_TMP/k$i.pem" -pubout -out "$TEST_TMP/p$i.pem"
	SAN_EMAIL=extra$i@example.org ca_issue "$TEST_TMP/p$i.pem" "$TEST_TMP/c$i.pem" --cn "extra $i" >/dev/null
	token_import_cert "$TEST_TMP/c$i.pem" "3$i" "extra$i"
done
token_import_cert "$CA_PEM" 20 test-ca
by_uri uri-more-certs

# By address: every certificate once (no template names a SAN), then the
# objects with the chosen one's id; the keys of the other certificates never.
ncerts=$(p11tool_token --list-objects --type cert 2>/dev/null | grep -c '^Certificate Object')
signed_through_spy addr RSA2048@Example.ORG
assert_eq $((ncerts + 2)) "$(objects_read | wc -l)" "by address: the $ncerts certificates and the two keys with id 01"
assert_eq 2 "$(spy_count '^[0-9]+: C_FindObjectsInit')" "by address: two searches (certificates, then the id)"
# The token's CA is still found among the certificates read, and sent.
smime_signature "$TEST_TMP/addr.eml" "$TEST_TMP/addr.p7s"
openssl pkcs7 -inform DER -in "$TEST_TMP/addr.p7s" -print_certs -noout >"$TEST_TMP/addr.certs" 2>&1
assert_matches "$TEST_TMP/addr.certs" '^subject=.*throwaway test CA'

# The address matches whole: a part of one, found in its bytes, is not it.
run_p11smime --pin-source "file:$PIN_FILE" sign --signer sa2048@example.org -i "$MSG" -o "$TEST_TMP/part.eml"
assert_exit 3 "a part of an address: no signer"
assert_contains "$ERR" "no certificate on the token" "a part of an address: said so"
assert_file_absent "$TEST_TMP/part.eml"
# An address in the certificates' subject only (emailAddress) is not a SAN.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TEST_TMP/k9.pem" 2>/dev/null
openssl pkey -in "$TEST_TMP/k9.pem" -pubout -out "$TEST_TMP/p9.pem"
SAN_EMAIL=other@example.org ca_issue "$TEST_TMP/p9.pem" "$TEST_TMP/c9.pem" --subject "/CN=dn only/emailAddress=dnonly@example.org" >/dev/null
token_import_cert "$TEST_TMP/c9.pem" 39 dnonly
run_p11smime --pin-source "file:$PIN_FILE" list --select dnonly@example.org
assert_exit 3 "an address only in the subject DN: not selected"

finish
