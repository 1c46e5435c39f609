#!/usr/bin/env bash
# p11smime decrypt on a SoftHSM token: messages made by openssl cms, gpgsm
# and NSS cmsutil for every key-management and content-cipher combination
# decrypt to the original bytes; bad inputs fail with exit 4 and no output;
# the key never leaves the token (pkcs11-spy).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
P=(--pin-source "file:$PIN_FILE")
cd "$TEST_TMP" || exit 1

# The original: a MIME entity with CRLF line ends, 8-bit text, > one cipher block.
printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello, d\xc3\xa9crypt\xc3\xa9 world.\r\n%s\r\n' \
	"$(head -c 3000 /dev/zero | tr '\0' 'x')" >pt.eml
printf 'From: Alice <alice@example.org>\nTo: rsa2048@example.org\nSubject: secret\nDate: Sat, 28 Nov 2026 12:00:00 +0000\n' >outer.txt

# encrypt OUT CERT CIPHER [openssl cms options...]
encrypt() {
	local out=$1 cert=$2 cipher=$3
	shift 3
	openssl cms -encrypt -binary -in pt.eml "-$cipher" -recip "$CERTS_DIR/$cert.pem" "$@" \
		-out "$out" 2>"$TEST_TMP/openssl.log" || { cat "$TEST_TMP/openssl.log"; return 1; }
}

# ----------------------------------------------------- every combination
# name cert cipher json-mechanism json-kea key-options
combos=(
	"rsa2048-v15-aes128 rsa2048 aes-128-cbc CKM_RSA_PKCS rsaEncryption"
	"rsa2048-v15-aes256 rsa2048 aes-256-cbc CKM_RSA_PKCS rsaEncryption"
	"rsa2048-v15-gcm rsa2048 aes-256-gcm CKM_RSA_PKCS rsaEncryption"
	"rsa2048-v15-3des rsa2048 des-ede3-cbc CKM_RSA_PKCS rsaEncryption"
	"rsa2048-oaep1-aes256 rsa2048 aes-256-cbc CKM_RSA_PKCS_OAEP RSAES-OAEP -keyopt rsa_padding_mode:oaep"
	"rsa2048-oaep1-gcm rsa2048 aes-256-gcm CKM_RSA_PKCS_OAEP RSAES-OAEP -keyopt rsa_padding_mode:oaep"
	"rsa2048-oaep256-aes128 rsa2048 aes-128-cbc CKM_RSA_X_509 RSAES-OAEP -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256"
	"rsa2048-oaep256-gcm rsa2048 aes-256-gcm CKM_RSA_X_509 RSAES-OAEP -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256"
	"rsa3072-v15-aes256 rsa3072 aes-256-cbc CKM_RSA_PKCS rsaEncryption"
	"rsa3072-v15-3des rsa3072 des-ede3-cbc CKM_RSA_PKCS rsaEncryption"
	"rsa3072-oaep1-aes128 rsa3072 aes-128-cbc CKM_RSA_PKCS_OAEP RSAES-OAEP -keyopt rsa_padding_mode:oaep"
	"rsa3072-oaep256-gcm rsa3072 aes-256-gcm CKM_RSA_X_509 RSAES-OAEP -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256"
	"p256-sha1kdf-aes128 p256 aes-128-cbc CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha1kdf-scheme"
	"p256-sha256kdf-aes256 p256 aes-256-cbc CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha256kdf-scheme -keyopt ecdh_kdf_md:sha256"
	"p256-sha256kdf-gcm p256 aes-256-gcm CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha256kdf-scheme -keyopt ecdh_kdf_md:sha256"
	"p256-sha1kdf-3des p256 des-ede3-cbc CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha1kdf-scheme"
	"p384-sha384kdf-aes256 p384 aes-256-cbc CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha384kdf-scheme -keyopt ecdh_kdf_md:sha384"
	"p384-sha512kdf-gcm p384 aes-256-gcm CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha512kdf-scheme -keyopt ecdh_kdf_md:sha512"
	"p384-sha224kdf-aes128 p384 aes-128-cbc CKM_ECDH1_DERIVE dhSinglePass-stdDH-sha224kdf-scheme -keyopt ecdh_kdf_md:sha224"
)
for c in "${combos[@]}"; do
	read -r name cert cipher mech kea opts <<<"$c"
	# shellcheck disable=SC2086
	encrypt "$name.p7m" "$cert" "$cipher" $opts || { fail "$name: openssl cms -encrypt"; continue; }
	run_p11smime "${P[@]}" --json decrypt --entity --keep-line-ends -i "$name.p7m" -o "$name.out"
	assert_exit 0 "$name: decrypts"
	if cmp -s "$name.out" pt.eml; then
		pass "$name: content equals the original byte for byte"
	else
		fail "$name: content differs from the original"
	fi
	assert_json "$OUT" ".mechanism == \"$mech\" and .content_cipher == \"$cipher\" and .key_encryption.algorithm == \"$kea\" and .decrypted" \
		"$name: report names $mech, $cipher, $kea"
	assert_json "$OUT" ".key_uri | test(\"token=p11smime-test.*object=$cert;type=private\")" \
		"$name: the key on the token is named"
done
assert_json "$OUT" '.key_encryption.kdf == "X9.63 SHA-224" and .key_encryption.curve == "P-384"' \
	"ECDH report names the KDF and curve"

# OAEP's padding is OpenSSL's; -v says so.
run_p11smime "${P[@]}" -v decrypt --entity -i rsa2048-oaep256-gcm.p7m -o /dev/null
assert_exit 0
assert_contains "$ERR" "token mechanism: CKM_RSA_X_509 (raw RSA on the token; the OAEP decoding"
assert_contains "$ERR" "key encryption: RSAES-OAEP (SHA-256, MGF1 SHA-256)"

# --------------------------------------------------------------- framing
cat outer.txt rsa2048-v15-gcm.p7m >msg.eml
run_p11smime "${P[@]}" decrypt -i msg.eml -o msg.out
assert_exit 0 "a whole message decrypts"
lf pt.eml pt-lf.eml
{ cat outer.txt; printf 'MIME-Version: 1.0\n'; cat pt-lf.eml; } >want.eml
if cmp -s msg.out want.eml; then
	pass "outer headers kept in order, MIME-Version once, LF input gives LF output"
else
	fail "decrypted message is not outer headers + entity"
	diff <(cat -A want.eml | head -8) <(cat -A msg.out | head -8)
fi
crlf msg.eml msg-crlf.eml
run_p11smime "${P[@]}" decrypt -i msg-crlf.eml
assert_exit 0
crlf outer.txt outer-crlf.txt
{ cat outer-crlf.txt; printf 'MIME-Version: 1.0\r\n'; cat pt.eml; } >want-crlf.eml
if cmp -s "$OUT" want-crlf.eml; then pass "CRLF message to standard output, CRLF kept"; else fail "CRLF framing"; fi
# From a pipe (read once: AES-GCM keeps the ciphertext for the tag instead of re-reading).
# shellcheck disable=SC2002
if cat msg.eml | timeout 60 "$P11SMIME" "${P[@]}" decrypt >pipe.out 2>pipe.err && cmp -s pipe.out want.eml; then
	pass "GCM message through a pipe decrypts"
else
	fail "GCM message through a pipe"
	cat pipe.err
fi
# Standard input, and raw DER and PEM forms.
RUN_STDIN=msg.eml run_p11smime "${P[@]}" decrypt
assert_exit 0
cmp -s "$OUT" want.eml && pass "reads standard input" || fail "standard input output differs"
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$CERTS_DIR/p256.pem" -outform DER -out m.der
openssl cms -encrypt -binary -stream -in pt.eml -aes-128-cbc -recip "$CERTS_DIR/rsa2048.pem" -outform PEM -out m.pem
run_p11smime "${P[@]}" decrypt --inform der -i m.der -o der.out
assert_exit 0
cmp -s der.out pt.eml && pass "--inform der: content as is" || fail "--inform der content differs"
run_p11smime "${P[@]}" decrypt --inform pem -i m.pem -o pem.out
assert_exit 0
cmp -s pem.out pt.eml && pass "--inform pem (streamed, indefinite length)" || fail "--inform pem content differs"
# --json without -o: the report alone on standard output.
run_p11smime "${P[@]}" --json decrypt -i msg.eml
assert_exit 0
assert_json "$OUT" '.content_type == "authEnveloped-data" and .authenticated == true' \
	"--json alone prints the report (GCM authenticated)"
assert_not_contains "$OUT" "Hello"

# ---------------------------------------- several recipients, --key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out outsider.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out outsider-ec.key 2>/dev/null
SAN_EMAIL=outsider@example.org ca_issue key:outsider.key outsider.pem smime-rsa >/dev/null
SAN_EMAIL=outsider-ec@example.org ca_issue key:outsider-ec.key outsider-ec.pem smime-ec >/dev/null
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip outsider.pem -recip outsider-ec.pem \
	-recip "$CERTS_DIR/p256.pem" -keyopt ecdh_kdf_md:sha256 -out multi.p7m 2>/dev/null
run_p11smime "${P[@]}" --json decrypt --entity --keep-line-ends -i multi.p7m -o multi.out
assert_exit 0 "three recipients (RSA, EC, EC), the token holds one: decrypts"
cmp -s multi.out pt.eml && pass "multi-recipient content equals the original" || fail "multi content"
assert_json "$OUT" '(.recipients | length) == 3 and ([.recipients[] | select(.matched)] | length) == 1 and .mechanism == "CKM_ECDH1_DERIVE"' \
	"report lists 3 recipients, 1 matched, ECDH used"
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip outsider.pem -recip "$CERTS_DIR/rsa2048.pem" \
	-recip "$CERTS_DIR/p384.pem" -out two.p7m 2>/dev/null
run_p11smime "${P[@]}" --json decrypt --entity --keep-line-ends -i two.p7m -o two.out
assert_exit 0 "two recipients on the token (RSA and EC)"
cmp -s two.out pt.eml && pass "two-on-token content equals the original" || fail "two-on-token content"
run_p11smime "${P[@]}" --json decrypt --key "pkcs11:token=$TOKEN_LABEL;id=%04;type=cert" \
	--entity --keep-line-ends -i two.p7m -o two-key.out
assert_exit 0 "--key picks the P-384 recipient"
assert_json "$OUT" '.mechanism == "CKM_ECDH1_DERIVE" and (.key_uri | test("id=%04"))' "--key: P-384 key used"
cmp -s two-key.out pt.eml && pass "--key content equals the original" || fail "--key content"
run_p11smime "${P[@]}" decrypt --key p256@example.org -i two.p7m -o nokey.out
assert_exit 3 "--key naming a non-recipient"
assert_contains "$ERR" "not a recipient of this message"
assert_file_absent nokey.out

# -------------------------------------------------------- for nobody here
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip outsider.pem -recip outsider-ec.pem \
	-out nobody.p7m 2>/dev/null
serial=$(openssl x509 -in outsider.pem -noout -serial | sed 's/.*=//' | tr 'A-F' 'a-f')
run_p11smime "${P[@]}" decrypt -i nobody.p7m -o nobody.out
assert_exit 3 "a message for nobody on the token: exit 3"
assert_contains "$ERR" "no certificate on the token is a recipient of this message"
assert_contains "$ERR" "key-transport: issuer CN=p11smime throwaway test CA,O=p11smime tests, serial $serial"
assert_contains "$ERR" "key-agreement: issuer CN=p11smime throwaway test CA"
assert_file_absent nobody.out

# ------------------------------------------------------------- bad input
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$CERTS_DIR/rsa2048.pem" -outform DER -out tag.der
cp tag.der tag-ok.der
flip_byte tag.der $(($(stat -c %s tag.der) - 1))
run_p11smime "${P[@]}" decrypt --inform der -i tag.der -o tag.out
assert_exit 4 "GCM with a flipped tag byte: exit 4"
assert_contains "$ERR" "AES-GCM tag mismatch"
assert_file_absent tag.out
run_p11smime "${P[@]}" decrypt --inform der -i tag-ok.der -o tag.out
assert_exit 0 "negative control: the same message unflipped decrypts"
rm -f tag.out
# Truncated: mid-body (base64), and mid-structure (DER).
head -c $(($(stat -c %s rsa2048-v15-aes256.p7m) * 2 / 3)) rsa2048-v15-aes256.p7m >trunc.p7m
run_p11smime "${P[@]}" decrypt -i trunc.p7m -o trunc.out
assert_exit 4 "truncated message: exit 4"
assert_matches "$ERR" "truncated"
assert_file_absent trunc.out
head -c 300 tag-ok.der >trunc.der
run_p11smime "${P[@]}" decrypt --inform der -i trunc.der -o trunc.out
assert_exit 4 "truncated DER: exit 4"
assert_contains "$ERR" "truncated"
assert_file_absent trunc.out
# Not encrypted at all.
run_p11smime "${P[@]}" decrypt -i pt.eml -o plain.out
assert_exit 4 "a plain message: exit 4"
assert_contains "$ERR" "not S/MIME encrypted"
assert_file_absent plain.out
# A CBC message whose ciphertext was changed at its end: the padding fails (or the content
# is garbage: CBC has no integrity, which is why S/MIME 4.0 prefers GCM).
openssl cms -encrypt -binary -in pt.eml -aes-256-cbc -recip "$CERTS_DIR/rsa2048.pem" -outform DER -out cbc.der
flip_byte cbc.der $(($(stat -c %s cbc.der) - 1))
run_p11smime "${P[@]}" decrypt --inform der -i cbc.der -o cbc.out
if [ "$RC" = 4 ]; then
	assert_contains "$ERR" "bad padding"
	assert_file_absent cbc.out
else
	cmp -s cbc.out pt.eml && fail "a changed CBC ciphertext decrypted to the original" ||
		pass "a changed CBC ciphertext did not give the original"
fi

# ---------------------------------- recipient certificates the rules judge
# recipient_case NAME ID CA_ISSUE_ARGS...: an RSA key NAME-rsa with id ID and
# its certificate NAME.pem on the token, and a message for it, NAME.p7m,
# decrypted with --json: old or rejected, the mail must stay readable.
recipient_case() {
	local name=$1 id=$2
	shift 2
	token_keygen rsa:2048 "$id" "$name-rsa"
	ca_issue "token:$id" "$name.pem" "$@" >/dev/null
	token_import_cert "$name.pem" "$id" "$name-rsa"
	openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$name.pem" -out "$name.p7m" 2>/dev/null
	run_p11smime "${P[@]}" --json decrypt --entity --keep-line-ends -i "$name.p7m" -o "$name.out"
	assert_exit 0 "$name: the mail decrypts"
	cmp -s "$name.out" pt.eml && pass "$name: content equals the original" || fail "$name: content differs"
}
C='.recipient.certificate'

# Expired: the report notes it; the rules accept it, but not for outgoing mail.
SAN_EMAIL=old@example.org recipient_case old 21 smime-rsa --start 20200101000000Z --end 20210101000000Z
assert_json "$OUT" "$C.expired == true and (.notes | map(test(\"expired on 2021-01-01\")) | any)" \
	"the report notes the expiry"
assert_contains "$ERR" "note: the recipient certificate expired on 2021-01-01"
assert_json "$OUT" "$C | .verdict == \"accepted\" and .usable_for_outgoing == false and .in_validity == false" \
	"expired recipient: accepted by the rules, not usable for outgoing mail"
assert_json "$OUT" "$C | .checks | length == 6 and (map(select(.rule == \"validity\"))[0] | .result == \"fail\" and .affects_verdict == false)" \
	"expired recipient: the validity check fails"
assert_json "$OUT" "$C | .checks | map(select(.rule != \"validity\") | .result) | all(. == \"pass\")" \
	"expired recipient: every other rule passes"
assert_json "$OUT" "$C | .warnings | type == \"array\"" "expired recipient: warnings listed"
# The same checks validate gives for this certificate at the same time
# (validate judges the file without its key: private-key-algorithm is skipped there).
run_p11smime "${P[@]}" --json validate --at 2026-11-28 old.pem
V_CHECKS=$(jq -c '.certificates[0].checks | map(select(.rule != "private-key-algorithm"))' "$OUT")
run_p11smime "${P[@]}" --json decrypt --at 2026-11-28 -i old.p7m -o old3.out
assert_exit 0
D_CHECKS=$(jq -c "$C.checks | map(select(.rule != \"private-key-algorithm\"))" "$OUT")
if [ -n "$V_CHECKS" ] && [ "$V_CHECKS" != "[]" ] && [ "$V_CHECKS" = "$D_CHECKS" ]; then
	pass "decrypt reports the certificate's checks as validate does"
else
	fail "decrypt's checks differ from validate's: $D_CHECKS vs $V_CHECKS"
fi
run_p11smime "${P[@]}" -v decrypt --at 2026-11-28 -i old.p7m -o old4.out
assert_exit 0
assert_contains "$ERR" "recipient certificate: accepted by the S/MIME rules, not usable for outgoing mail"
run_p11smime "${P[@]}" --json decrypt --at 2020-06-01 -i old.p7m -o old2.out
assert_exit 0
assert_json "$OUT" "$C.expired == false and (.notes | length) == 0" "valid at --at 2020-06-01"
assert_json "$OUT" "$C | .verdict == \"accepted\" and .usable_for_outgoing == true and (.checks | map(select(.rule == \"validity\"))[0].result == \"pass\")" \
	"valid at --at 2020-06-01: usable for outgoing mail, validity passes"

# No e-mail address in the SAN: rejected by the rules, yet its mail decrypts.
printf '[ext]\nkeyUsage = critical, keyEncipherment\nsubjectAltName = DNS:nosan.example.org\n' >nosan.ext
recipient_case nosan 22 "$TEST_TMP/nosan.ext" --no-email-dn
assert_json "$OUT" "$C | .verdict == \"rejected\" and .usable_for_outgoing == false and .expired == false" \
	"rejected recipient: the report says rejected"
assert_json "$OUT" "$C | .checks | map(select(.rule == \"san-email\"))[0] | .result == \"fail\" and .affects_verdict" \
	"rejected recipient: the san-email check fails"
assert_contains "$ERR" "note: the recipient certificate is rejected by the S/MIME rules (san-email)"

# --------------------------------------------------------- gpgsm, NSS
gpgsm_setup "$CA_PEM"
gpgsm --batch --import "$CERTS_DIR/rsa2048.pem" "$CERTS_DIR/rsa3072.pem" >"$TEST_TMP/gpgsm.log" 2>&1
for c in rsa2048 rsa3072; do
	if gpgsm --batch --encrypt -r "$c@example.org" -o "g-$c.der" pt.eml >"$TEST_TMP/gpgsm.log" 2>&1; then
		run_p11smime "${P[@]}" --json decrypt --inform der -i "g-$c.der" -o "g-$c.out"
		assert_exit 0 "gpgsm --encrypt to $c: decrypts"
		cmp -s "g-$c.out" pt.eml && pass "gpgsm $c: content equals the original" || fail "gpgsm $c content"
		assert_json "$OUT" '.mechanism == "CKM_RSA_PKCS"' "gpgsm $c: RSA v1.5 on the token"
	else
		fail "gpgsm --encrypt to $c"
		cat "$TEST_TMP/gpgsm.log"
	fi
done
gpgsm --batch --armor --encrypt -r rsa2048@example.org -o g.pem pt.eml >"$TEST_TMP/gpgsm.log" 2>&1
run_p11smime "${P[@]}" decrypt --inform pem -i g.pem -o g-pem.out
assert_exit 0 "gpgsm --armor output decrypts with --inform pem"
cmp -s g-pem.out pt.eml && pass "gpgsm armored: content equals the original" || fail "gpgsm armored content"
echo "note: gpgsm 2.2 cannot encrypt to EC certificates; EC interop is covered by openssl"

nss_setup "$CA_PEM"
for c in rsa2048 rsa3072; do
	certutil -A -d "$NSS_DB" -n "$c" -t ",," -i "$CERTS_DIR/$c.pem" >"$TEST_TMP/certutil.log" 2>&1
	if cmsutil -E -d "$NSS_DB" -r "$c@example.org" -i pt.eml -o "n-$c.der" >"$TEST_TMP/cmsutil.log" 2>&1; then
		run_p11smime "${P[@]}" decrypt --inform der -i "n-$c.der" -o "n-$c.out"
		assert_exit 0 "NSS cmsutil -E to $c: decrypts"
		cmp -s "n-$c.out" pt.eml && pass "NSS $c: content equals the original" || fail "NSS $c content"
	else
		fail "cmsutil -E to $c"
		cat "$TEST_TMP/cmsutil.log"
	fi
done
echo "note: NSS cmsutil $(dpkg-query -W -f '${Version}' libnss3-tools 2>/dev/null) cannot encrypt to EC certificates"

# --------------------------------------- the key never leaves the token
# spy_log_facts: "key HANDLE MECH" for every C_DecryptInit/C_DeriveKey, "attr HANDLE CKA_X"
# for every attribute whose value was asked for with C_GetAttributeValue (a buffer given:
# a NULL buffer only asks for the length, which a sensitive key refuses anyway), "call NAME"
# for every call.
spy_log_facts() {
	awk '
	/^[0-9]+: C_/ { fn = $2; inblk = 0; mech = ""; print "call", fn; next }
	fn == "C_GetAttributeValue" && /^\[in\] hObject/ { obj = $4 }
	fn == "C_GetAttributeValue" && /^\[in\] pTemplate/ { inblk = 1; next }
	/^\[out\]/ || /^Returned/ { inblk = 0 }
	inblk && /^ +CKA_/ && $2 !~ /^0+$/ { print "attr", obj, $1 }
	(fn == "C_DecryptInit" || fn == "C_DeriveKey") && /pMechanism->type/ { mech = $4 }
	fn == "C_DecryptInit" && /^\[in\] hKey/ { print "key", $4, mech }
	fn == "C_DeriveKey" && /^\[in\] hBaseKey/ { print "key", $4, mech }
	' "$SPY_LOG"
}
check_spy() { # LABEL WANT_MECH
	local facts keys k bad
	facts=$(spy_log_facts)
	keys=$(awk '$1 == "key" { print $2 }' <<<"$facts" | sort -u)
	[ -n "$keys" ] && pass "$1: the token was asked to use its key" || fail "$1: no C_DecryptInit/C_DeriveKey in the spy log"
	grep -q "^key .* $2\$" <<<"$facts" && pass "$1: the token did $2" || fail "$1: no $2 in the spy log"
	bad=0
	for k in $keys; do
		if grep -qE "^attr $k (CKA_VALUE|CKA_PRIVATE_EXPONENT|CKA_PRIME_1|CKA_PRIME_2|CKA_EXPONENT_1|CKA_EXPONENT_2|CKA_COEFFICIENT)\$" <<<"$facts"; then
			bad=1
			fail "$1: a secret attribute of key $k was read"
		fi
	done
	[ $bad = 0 ] && pass "$1: no secret attribute of the private key was asked for"
	grep -qE "^call C_(WrapKey|CopyObject|SetAttributeValue)\$" <<<"$facts" &&
		fail "$1: the key was wrapped, copied or changed" || pass "$1: no C_WrapKey/C_CopyObject/C_SetAttributeValue"
	# Asked before: the mechanism check precedes the operation.
	awk '/^[0-9]+: C_GetMechanismInfo/ { m = 1 } /^[0-9]+: C_(DecryptInit|DeriveKey)/ { print (m ? "asked" : "not-asked"); exit }' "$SPY_LOG" |
		grep -qx asked && pass "$1: C_GetMechanismInfo came first" || fail "$1: no C_GetMechanismInfo before the operation"
}
# Negative control: the check sees a secret attribute read from the key it used.
SPY_LOG=$TEST_TMP/fake-spy.log
printf '%s\n' '5: C_DecryptInit' '[in] hSession = 0x1' '[in] pMechanism->type = CKM_RSA_PKCS' \
	'[in] hKey = 0xd' 'Returned:  0 CKR_OK' '6: C_GetAttributeValue' '[in] hSession = 0x1' \
	'[in] hObject = 0xd' '[in] pTemplate[1]: ' '    CKA_PRIVATE_EXPONENT  00005600b1e24050 / 256' \
	'Returned:  0 CKR_OK' >"$SPY_LOG"
if spy_log_facts | grep -qx "attr 0xd CKA_PRIVATE_EXPONENT"; then
	pass "negative control: a faked secret-attribute read is caught"
else
	fail "the spy-log check misses a secret-attribute read"
fi
for c in rsa2048-v15-aes256:CKM_RSA_PKCS rsa2048-oaep256-gcm:CKM_RSA_X_509 p256-sha256kdf-gcm:CKM_ECDH1_DERIVE; do
	name=${c%%:*}
	spy_on
	run_p11smime "${P[@]}" decrypt --entity --keep-line-ends -i "$name.p7m" -o "spy-$name.out"
	spy_off
	assert_exit 0 "$name through pkcs11-spy"
	cmp -s "spy-$name.out" pt.eml && pass "$name through the spy: content equals the original" || fail "$name spy content"
	check_spy "$name" "${c#*:}"
done

# -------------------------------- a key that needs its PIN for every use (mock module)
openssl cms -encrypt -binary -in pt.eml -aes-256-gcm -recip "$TOKEN_DIR/mock/cert.pem" \
	-keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -out mock.p7m 2>/dev/null
saved_module=$P11SMIME_MODULE
mock_token always-auth
run_p11smime "${P[@]}" --json decrypt --entity --keep-line-ends -i mock.p7m -o mock.out
assert_exit 0 "CKA_ALWAYS_AUTHENTICATE key (mock): decrypts"
cmp -s mock.out pt.eml && pass "always-authenticate: content equals the original" || fail "mock content"
assert_eq 1 "$(mock_log_count '^C_Login user_type=2 ')" "context-specific login before C_Decrypt"
assert_eq 1 "$(mock_log_count '^C_DecryptInit .*mechanism=0x3 ')" "OAEP as raw RSA (CKM_RSA_X_509) on the token"
export P11SMIME_MODULE=$saved_module
unset P11S_MOCK_FLAGS

# No trial decryption: three recipients (an outsider's RSA key first), one operation.
spy_on
run_p11smime "${P[@]}" decrypt --entity -i two.p7m -o spy-two.out
spy_off
assert_exit 0 "three-recipient message through the spy"
assert_eq 1 "$(spy_count '^[0-9]+: C_Decrypt$')" "exactly one C_Decrypt for three recipients"
assert_eq 0 "$(spy_count '^[0-9]+: C_DeriveKey$')" "no ECDH attempt for the P-384 recipient"

# ------------------------------------------------------------ wrong PIN
printf '000000\n' >wrong.pin
run_p11smime --pin-source "file:$TEST_TMP/wrong.pin" decrypt -i msg.eml -o pin.out
assert_exit 3 "wrong PIN: exit 3"
assert_matches -i "$ERR" "pin"
assert_file_absent pin.out
run_p11smime --pin-source "file:$TEST_TMP/wrong.pin" decrypt -i nobody.p7m -o pin.out
assert_exit 3 "a message for nobody, a wrong PIN: exit 3"
assert_contains "$ERR" "no certificate on the token is a recipient"
# The token wants a login and may keep certificates private: it was tried.
assert_contains "$ERR" "the login to look for private ones failed: token 'p11smime-test' did not accept the PIN"

finish
