#!/usr/bin/env bash
# p11smime sign and the token: the key never leaves it (pkcs11-spy), and
# every refusal (expired, rule failed, wrong key, ambiguous, wrong PIN,
# truncated input) says why, exits as documented and writes nothing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
MSG=$TEST_TMP/msg.eml
printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: spy\nContent-Type: text/plain\n\nhello\n' >"$MSG"

# ------------------------------------------------------------ pkcs11-spy

# spy_report: one line per event, from the spy log:
#   sign MECH HKEY RV                 C_SignInit (and its C_Sign result)
#   attr HOBJ CLASS ATTR...           C_GetAttributeValue: the object's class
#                                     (when it was read) and what was asked
#                                     ("CKA_X?": only its length)
#   call NAME                         every function called
spy_report() {
	perl -ne '
		if (/^\d+: (C_\w+)/) { flush(); $fn = $1; %b = (fn => $1, attrs => []); $sec = ""; print "call $1\n"; next }
		$b{hobj} = $1 if /^\[in\] hObject = (\S+)/;
		$b{hkey} = $1 if /^\[in\] hKey = (\S+)/;
		$b{mech} = $1 if /^\[in\] pMechanism->type = (\S+)/;
		$b{rv} = $1 if /^Returned:\s+\d+ (\S+)/;
		$sec = "in" if /^\[in\] pTemplate/; $sec = "out" if /^\[out\] pTemplate/;
		if (/^\s+(CKA_\S+)\s*(\S*)/) {
			my ($a, $v) = ($1, $2);
			# A NULL buffer is a length query: marked with a trailing "?".
			push @{$b{attrs}}, ($v =~ /^0+$/ ? "$a?" : $a) if $sec eq "in";
			$class{$b{hobj}} = $v if $sec eq "out" && $a eq "CKA_CLASS" && $v =~ /^CKO_/;
		}
		sub flush {
			return unless %b;
			print "sign $b{mech} $b{hkey} $b{rv}\n" if $b{fn} eq "C_SignInit";
			print "signed $b{rv}\n" if $b{fn} eq "C_Sign";
			print "attr $b{hobj} ", ($class{$b{hobj}} // "?"), " @{$b{attrs}}\n" if $b{fn} eq "C_GetAttributeValue";
			%b = ();
		}
		END { flush(); print "class $_ $class{$_}\n" for keys %class }' "$SPY_LOG"
}

spy_check() { # NAME SIGNER MECH [sign options]
	local name=$1 signer=$2 mech=$3 rep=$TEST_TMP/spy.report hkey
	shift 3
	spy_on
	run_p11smime --pin-source "file:$PIN_FILE" sign --signer "$signer" -i "$MSG" -o "$TEST_TMP/$name.eml" "$@"
	spy_off
	assert_exit 0 "$name: signed through pkcs11-spy"
	spy_report >"$rep"
	hkey=$(awk -v m="$mech" '$1 == "sign" && $2 == m && $4 == "CKR_OK" { print $3; exit }' "$rep")
	if [ -n "$hkey" ]; then
		pass "$name: C_SignInit with $mech on handle $hkey"
	else
		fail "$name: no successful C_SignInit with $mech"
		grep '^sign' "$rep"
	fi
	assert_eq CKO_PRIVATE_KEY "$(awk -v h="$hkey" '$1 == "class" && $2 == h { print $3 }' "$rep")" \
		"$name: the signing key object is a private key"
	assert_eq 1 "$(grep -c '^signed CKR_OK' "$rep")" "$name: one C_Sign, CKR_OK"
	# Nothing secret is ever asked for, of any object: no private RSA component,
	# no CKA_VALUE of a private or secret key (or of an object of unknown class).
	local secret
	secret=$(grep -E '^attr ' "$rep" | grep -E 'CKA_(PRIVATE_EXPONENT|PRIME_1|PRIME_2|EXPONENT_1|EXPONENT_2|COEFFICIENT)\b' | head -n 3)
	assert_eq "" "$secret" "$name: no C_GetAttributeValue of a private RSA component"
	local keys='$1 == "attr" && ($3 == "CKO_PRIVATE_KEY" || $3 == "CKO_SECRET_KEY" || $3 == "?")'
	secret=$(awk "$keys"' { for (i = 4; i <= NF; i++) if ($i == "CKA_VALUE") print $2, $3 }' "$rep" | head -n 3)
	assert_eq "" "$secret" "$name: no CKA_VALUE fetched of a private key"
	# Stricter, as issue 4 words it: not even the length of a key's CKA_VALUE is asked.
	secret=$(awk "$keys"' { for (i = 4; i <= NF; i++) if ($i == "CKA_VALUE?") print $2, $3 }' "$rep" | sort -u | head -n 3)
	assert_eq "" "$secret" "$name: no C_GetAttributeValue of CKA_VALUE (not even its length) on a private key"
	assert_eq 0 "$(grep -cE '^call C_(WrapKey|DeriveKey|CopyObject|SetAttributeValue)$' "$rep")" \
		"$name: no C_WrapKey, C_DeriveKey, C_CopyObject, C_SetAttributeValue"
	openssl cms -verify -in "$TEST_TMP/$name.eml" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$name: signature verifies" || fail "$name: signature does not verify"
}

spy_check spy-rsa rsa2048@example.org CKM_RSA_PKCS
spy_check spy-pss rsa2048@example.org CKM_RSA_PKCS_PSS --pss
spy_check spy-p256 p256@example.org CKM_ECDSA

# ------------------------------------------------------------ refusals

# refuse NAME EXIT TEXT [args]: sign fails with EXIT, says TEXT, writes nothing.
refuse() {
	local name=$1 want=$2 text=$3 out=$TEST_TMP/refused-$1.eml
	shift 3
	RUN_STDIN=${RUN_STDIN:-} run_p11smime --pin-source "file:$PIN_FILE" sign -o "$out" "$@"
	assert_exit "$want" "$name: exit $want"
	assert_contains "$ERR" "$text"
	assert_file_absent "$out"
	[ -z "$(ls "$TEST_TMP" | grep -F ".p11smime-")" ] && pass "$name: no temporary file left" ||
		fail "$name: a temporary file was left behind"
}

refuse expired 1 "not valid" --signer rsa2048@example.org --at 2040-01-01 -i "$MSG"
refuse not-yet-valid 1 "not valid" --signer p256@example.org --at 2000-01-01T00:00:00Z -i "$MSG"

# A certificate whose Key Usage lacks digitalSignature, paired with its key.
token_keygen rsa:2048 10 nosign
cat >"$TEST_TMP/nods.ext" <<'EOF'
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:nosign@example.org
EOF
SAN_EMAIL=nosign@example.org ca_issue token:10 "$TEST_TMP/nosign.pem" "$TEST_TMP/nods.ext"
token_import_cert "$TEST_TMP/nosign.pem" 10 nosign
refuse no-digital-signature 1 "digitalSignature" --signer nosign@example.org -i "$MSG"

# A certificate without an e-mail address in its SAN: rejected by the rules.
token_keygen EC:prime256v1 11 nosan
cat >"$TEST_TMP/nosan.ext" <<'EOF'
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
EOF
ca_issue token:11 "$TEST_TMP/nosan.pem" "$TEST_TMP/nosan.ext" --no-email-dn
token_import_cert "$TEST_TMP/nosan.pem" 11 nosan
refuse rule-failed 1 "san-email" --signer "pkcs11:token=$TOKEN_LABEL;object=nosan;type=cert" -i "$MSG"

# The certificate of another key under this key's CKA_ID.
token_keygen rsa:2048 12 wrongkey
token_import_cert "$CERTS_DIR/rsa3072.pem" 12 wrongkey
refuse key-mismatch 1 "match" --signer "pkcs11:token=$TOKEN_LABEL;id=%12;type=cert" -i "$MSG"

# Two certificates for one address.
SAN_EMAIL=p384@example.org ca_issue token:04 "$TEST_TMP/p384b.pem" smime-ec
token_import_cert "$TEST_TMP/p384b.pem" 13 p384-second
refuse ambiguous 3 "type=cert" --signer p384@example.org -i "$MSG"
assert_eq 2 "$(grep -c 'pkcs11:' "$ERR")" "ambiguous: both candidates listed"

# A wrong PIN: one attempt, no retry.
echo 999999 >"$TEST_TMP/badpin"
RUN_STDIN= run_p11smime --pin-source "file:$TEST_TMP/badpin" sign --signer rsa2048@example.org -i "$MSG" \
	-o "$TEST_TMP/badpin.eml"
assert_exit 3 "wrong PIN: exit 3"
assert_matches "$ERR" "PIN|pin"
assert_file_absent "$TEST_TMP/badpin.eml"

# Truncated input: a multipart cut before its closing delimiter, a header cut mid-line.
printf 'From: rsa2048@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\nContent-Type: text/plain\n\nsecond, cut' \
	>"$TEST_TMP/trunc.eml"
refuse truncated-multipart 4 "truncated" --signer rsa2048@example.org -i "$TEST_TMP/trunc.eml"
printf 'From: rsa2048@example.org\nSubject: cut' >"$TEST_TMP/trunc2.eml"
refuse truncated-header 4 "truncated" --signer rsa2048@example.org -i "$TEST_TMP/trunc2.eml"
refuse empty-input 4 "empty" --signer rsa2048@example.org -i /dev/null
# On standard output: nothing at all.
RUN_STDIN=$TEST_TMP/trunc.eml run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org
assert_exit 4 "truncated on stdin: exit 4"
assert_eq 0 "$(wc -c <"$OUT")" "truncated on stdin: nothing on standard output"

# Usage errors.
refuse no-signer 2 "--signer" -i "$MSG"
refuse bad-digest 2 "--digest" --signer rsa2048@example.org --digest md5 -i "$MSG"
refuse pss-on-ec 2 "RSA" --signer p256@example.org --pss -i "$MSG"
refuse bad-time 2 "time" --signer rsa2048@example.org --at yesterday -i "$MSG"
refuse no-such-signer 3 "" --signer nobody@example.org -i "$MSG"
# A --chain file that holds no certificate is named, not skipped.
printf 'not a certificate\n' >"$TEST_TMP/notacert.txt"
refuse bad-chain 4 "notacert.txt" --signer rsa2048@example.org --chain "$TEST_TMP/notacert.txt" -i "$MSG"
refuse missing-chain 4 "nosuchfile.pem" --signer rsa2048@example.org --chain "$TEST_TMP/nosuchfile.pem" -i "$MSG"

# --chain and CA certificates from the token: included in the signature.
RUN_STDIN= run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$MSG" \
	-o "$TEST_TMP/nochain.eml"
smime_signature "$TEST_TMP/nochain.eml" "$TEST_TMP/nochain.p7s"
openssl pkcs7 -inform DER -in "$TEST_TMP/nochain.p7s" -print_certs -noout >"$TEST_TMP/nochain.certs" 2>&1
grep -q '^subject=.*throwaway test CA' "$TEST_TMP/nochain.certs" &&
	fail "no CA on the token: yet the CA certificate is in the signature" ||
	pass "no CA on the token: only the signer's certificate"
token_import_cert "$CA_PEM" 20 test-ca
RUN_STDIN= run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$MSG" \
	-o "$TEST_TMP/chain.eml" --chain "$CERTS_DIR/p256.pem"
assert_exit 0 "--chain and the token's CA"
smime_signature "$TEST_TMP/chain.eml" "$TEST_TMP/chain.p7s"
openssl pkcs7 -inform DER -in "$TEST_TMP/chain.p7s" -print_certs -noout >"$TEST_TMP/chain.certs" 2>&1
assert_matches "$TEST_TMP/chain.certs" '^subject=.*p11smime test rsa2048'
assert_matches "$TEST_TMP/chain.certs" '^subject=.*p11smime test p256'
assert_matches "$TEST_TMP/chain.certs" '^subject=.*p11smime throwaway test CA'
assert_eq 3 "$(grep -c '^subject=' "$TEST_TMP/chain.certs")" "chain: three certificates"
openssl cms -verify -in "$TEST_TMP/chain.eml" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
	pass "chain: verifies" || fail "chain: does not verify"

# A token without CKM_ECDSA, CKM_RSA_PKCS_PSS and CKM_RSA_X_509 (raw RSA, PSS's fallback
# when the token has no PSS of its own): SoftHSM's slots.mechanisms takes them out of
# C_GetMechanismList (SoftHSM 2.6 skips the first entry of a "-" list, hence
# the repeat; its C_GetMechanismInfo still answers for them).  Said plainly
# before anything is signed, exit 3, and never PKCS#1 v1.5 instead of PSS.
new_token
echo "slots.mechanisms = -CKM_ECDSA,CKM_ECDSA,CKM_RSA_X_509,CKM_RSA_PKCS_PSS" >>"$SOFTHSM2_CONF"
refuse no-ecdsa 3 "cannot sign with ECDSA" --signer p256@example.org -i "$MSG"
refuse no-pss 3 "cannot sign with RSA-PSS" --signer rsa2048@example.org --pss -i "$MSG"
# PKCS#1 v1.5 is still there, when asked for.
RUN_STDIN= run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$MSG" \
	-o "$TEST_TMP/rsa-on-no-ecdsa.eml"
assert_exit 0 "without ECDSA and raw RSA: PKCS#1 v1.5 still signs"

finish
