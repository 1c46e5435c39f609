#!/usr/bin/env bash
# keygen, csr and import through pkcs11-spy: no secret attribute of a
# private key is ever asked for (not even CKA_VALUE's length), no C_WrapKey;
# keygen is one C_GenerateKeyPair, csr one C_Sign on the token, a PKCS#12
# key goes in by C_CreateObject.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token

# One line per event (as in test_sign_token.sh):
#   attr HOBJ CLASS ATTR...   C_GetAttributeValue ("CKA_X?": only its length)
#   call NAME                 every function called
spy_report() {
	perl -ne '
		if (/^\d+: (C_\w+)/) { flush(); $fn = $1; %b = (fn => $1, attrs => []); $sec = ""; print "call $1\n"; next }
		$b{hobj} = $1 if /^\[in\] hObject = (\S+)/;
		$sec = "in" if /^\[in\] pTemplate/; $sec = "out" if /^\[out\] pTemplate/;
		if (/^\s+(CKA_\S+)\s*(\S*)/) {
			my ($a, $v) = ($1, $2);
			push @{$b{attrs}}, ($v =~ /^0+$/ ? "$a?" : $a) if $sec eq "in";
			$class{$b{hobj}} = $v if $sec eq "out" && $a eq "CKA_CLASS" && $v =~ /^CKO_/;
		}
		sub flush {
			return unless %b;
			print "attr $b{hobj} ", ($class{$b{hobj}} // "?"), " @{$b{attrs}}\n" if $b{fn} eq "C_GetAttributeValue";
			%b = ();
		}
		END { flush() }' "$SPY_LOG"
}

# NAME: the checks every traced run must pass.
spy_clean() {
	local name=$1 rep=$TEST_TMP/$1.report secret keys
	spy_report >"$rep"
	secret=$(grep -E '^attr ' "$rep" | grep -E 'CKA_(PRIVATE_EXPONENT|PRIME_1|PRIME_2|EXPONENT_1|EXPONENT_2|COEFFICIENT)\b' | head -n 3)
	assert_eq "" "$secret" "$name: no private RSA component asked for"
	keys='$1 == "attr" && ($3 == "CKO_PRIVATE_KEY" || $3 == "CKO_SECRET_KEY" || $3 == "?")'
	secret=$(awk "$keys"' { for (i = 4; i <= NF; i++) if ($i == "CKA_VALUE" || $i == "CKA_VALUE?") print $2, $3 }' "$rep" | sort -u | head -n 3)
	assert_eq "" "$secret" "$name: no CKA_VALUE (not even its length) of a private key"
	assert_eq 0 "$(grep -cE '^call C_(WrapKey|CopyObject|SetAttributeValue)$' "$rep")" \
		"$name: no C_WrapKey, C_CopyObject, C_SetAttributeValue"
	assert_eq 1 "$(grep -c '^call C_Login$' "$rep")" "$name: one C_Login"
}

spy_on
run_p11smime --pin-source "file:$PIN_FILE" keygen --token "$TOKEN_LABEL" --type rsa:2048 --label spied
spy_off
assert_exit 0 "keygen through the spy"
spy_clean keygen
assert_eq 1 "$(spy_count '^[0-9]+: C_GenerateKeyPair$')" "keygen: one C_GenerateKeyPair"
assert_eq 0 "$(spy_count '^[0-9]+: C_CreateObject$')" "keygen: no C_CreateObject"

spy_on
run_p11smime --pin-source "file:$PIN_FILE" csr --key "pkcs11:token=$TOKEN_LABEL;object=spied" \
	--email spied@example.org -o "$TEST_TMP/spied.csr"
spy_off
assert_exit 0 "csr through the spy"
spy_clean csr
assert_eq 1 "$(spy_count '^[0-9]+: C_Sign$')" "csr: signed by one C_Sign on the token"
openssl req -in "$TEST_TMP/spied.csr" -verify -noout 2>/dev/null && pass "csr: the request verifies" ||
	fail "csr: the request does not verify"

openssl x509 -req -in "$TEST_TMP/spied.csr" -CA "$CA_PEM" -CAkey "$CA_KEY" -copy_extensions copy \
	-days 30 -set_serial 0x1234 -out "$TEST_TMP/spied.pem" 2>/dev/null
spy_on
run_p11smime --pin-source "file:$PIN_FILE" import "$TEST_TMP/spied.pem"
spy_off
assert_exit 0 "import through the spy"
spy_clean import
assert_eq 1 "$(spy_count '^[0-9]+: C_CreateObject$')" "import: one C_CreateObject (the certificate)"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TEST_TMP/soft.key" 2>/dev/null
SAN_EMAIL=soft@example.org ca_issue "key:$TEST_TMP/soft.key" "$TEST_TMP/soft.pem"
openssl pkcs12 -export -inkey "$TEST_TMP/soft.key" -in "$TEST_TMP/soft.pem" -passout pass:pw \
	-out "$TEST_TMP/soft.p12"
spy_on
P12PASS=pw run_p11smime --pin-source "file:$PIN_FILE" import --p12-pass-source env:P12PASS "$TEST_TMP/soft.p12"
spy_off
assert_exit 0 "PKCS#12 import through the spy"
spy_clean pkcs12
assert_eq 3 "$(spy_count '^[0-9]+: C_CreateObject$')" "pkcs12: private key, public key, certificate by C_CreateObject"
assert_eq 0 "$(spy_count '^[0-9]+: C_UnwrapKey$')" "pkcs12: no C_UnwrapKey"

finish
