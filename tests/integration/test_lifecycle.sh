#!/usr/bin/env bash
# The whole lifecycle (issue 15): keygen, csr (verified by openssl req,
# issued by the test CA), import, validate with every key check passing,
# sign and decrypt with the key; stray, CA and contact certificates; import
# twice; PKCS#12 (RSA and EC) leaving a sensitive, non-extractable key that
# is not CKA_LOCAL, with the warning; the PIN policy on every command.
. "$(dirname "$0")/lib.sh"

# run_p11smime with the current token's PIN file.
run() { run_p11smime --pin-source "file:$PIN_FILE" "$@"; }

# A certificate for REQ (PEM) from the test CA, with the extensions requested.
ca_sign_csr() { # REQ OUT
	openssl x509 -req -in "$1" -CA "$CA_PEM" -CAkey "$CA_KEY" -copy_extensions copy -days 365 \
		-set_serial "0x$(openssl rand -hex 8 | sed 's/^[89a-f]/7/')" -out "$2" 2>/dev/null
}

object_count() {
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" \
		--list-objects 2>/dev/null | grep -cE '^[A-Z][a-z]+ (Key )?Object;'
}

MSG=$TEST_TMP/msg.eml

# --------------------------------------------------- keygen -> csr -> import

for type in rsa:3072 ec:P-256; do
	new_token
	name=${type/:/-}
	addr=$name@example.org
	printf 'From: %s\nTo: bob@example.net\nSubject: lifecycle\nContent-Type: text/plain\n\nhello %s\n' "$addr" "$name" >"$MSG"
	run keygen --token "$TOKEN_LABEL" --type "$type" --label "$name"
	assert_exit 0 "$type: keygen"
	run csr --key "pkcs11:token=$TOKEN_LABEL;id=%05" --email "$addr" \
		--email "second-$addr" --subject "/CN=Lifecycle $name/O=p11smime tests" -o "$TEST_TMP/$name.csr"
	assert_exit 0 "$type: csr"
	assert_eq "" "$STDOUT" "$type: -o: nothing on standard output"
	openssl req -in "$TEST_TMP/$name.csr" -verify -noout 2>"$TEST_TMP/verify.err" &&
		pass "$type: openssl req -verify accepts the request" ||
		fail "$type: openssl req -verify: $(cat "$TEST_TMP/verify.err")"
	openssl req -in "$TEST_TMP/$name.csr" -noout -text >"$TEST_TMP/$name.csr.txt"
	assert_contains "$TEST_TMP/$name.csr.txt" "Subject: CN = Lifecycle $name, O = p11smime tests"
	assert_contains "$TEST_TMP/$name.csr.txt" "email:$addr, email:second-$addr"
	assert_contains "$TEST_TMP/$name.csr.txt" "X509v3 Key Usage: critical"
	case "$type" in
	rsa:*) assert_contains "$TEST_TMP/$name.csr.txt" "Digital Signature, Key Encipherment" ;;
	ec:*) assert_contains "$TEST_TMP/$name.csr.txt" "Digital Signature, Key Agreement" ;;
	esac
	assert_contains "$TEST_TMP/$name.csr.txt" "E-mail Protection"
	# The request's key is the token's public key.
	token_pubkey 05 "$TEST_TMP/$name.pub"
	assert_eq "$(openssl pkey -pubin -in "$TEST_TMP/$name.pub" -outform DER | sha256sum)" \
		"$(openssl req -in "$TEST_TMP/$name.csr" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum)" \
		"$type: the request carries the token's public key"

	ca_sign_csr "$TEST_TMP/$name.csr" "$TEST_TMP/$name.pem" && pass "$type: issued by the test CA" ||
		fail "$type: the CA did not issue"
	run import "$TEST_TMP/$name.pem"
	assert_exit 0 "$type: import"
	assert_matches "$OUT" "^Imported certificate: pkcs11:.*id=%05;object=$name;type=cert"
	assert_contains "$OUT" "verdict   ACCEPTED"
	run --json validate --ca "$CA_PEM" "pkcs11:token=$TOKEN_LABEL;id=%05;type=cert"
	assert_exit 0 "$type: validate"
	assert_json "$OUT" '.certificates | length == 1' "$type: validate judged one certificate"
	assert_json "$OUT" '.certificates[0].verdict == "accepted" and .certificates[0].usable_for_outgoing' "$type: accepted, usable"
	assert_json "$OUT" '[.certificates[0].key.checks[].result] | length == 4 and all(. == "pass")' \
		"$type: every key check passes"
	assert_json "$OUT" '.certificates[0].can_sign and .certificates[0].can_encrypt' "$type: can sign and encrypt"
	assert_json "$OUT" '.certificates[0].chain.result == "pass"' "$type: chains to the test CA"

	run sign --signer "second-$addr" -i "$MSG" -o "$TEST_TMP/$name.signed"
	assert_exit 0 "$type: sign with the new key"
	openssl cms -verify -in "$TEST_TMP/$name.signed" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$type: openssl cms verifies the signature" || fail "$type: the signature does not verify"
	openssl cms -encrypt -aes256 -in "$MSG" -out "$TEST_TMP/$name.enc" "$TEST_TMP/$name.pem" 2>/dev/null
	run decrypt -i "$TEST_TMP/$name.enc"
	assert_exit 0 "$type: decrypt with the new key"
	assert_contains "$OUT" "hello $name"

	# Twice: a no-op that says so.
	before=$(object_count)
	run import "$TEST_TMP/$name.pem"
	assert_exit 0 "$type: import twice"
	assert_contains "$OUT" "Already on the token"
	assert_contains "$OUT" "(nothing written)"
	assert_eq "$before" "$(object_count)" "$type: nothing written the second time"
done

# Renewal: a second request on the same key, the public key unchanged.
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%05;type=private" --email renew@example.org \
	--subject "CN=Renewed,O=p11smime tests" --digest sha512
assert_exit 0 "renewal csr to standard output"
printf '%s\n' "$STDOUT" >"$TEST_TMP/renew.csr"
openssl req -in "$TEST_TMP/renew.csr" -verify -noout 2>/dev/null && pass "renewal request verifies" ||
	fail "renewal request does not verify"
openssl req -in "$TEST_TMP/renew.csr" -noout -subject -text >"$TEST_TMP/renew.txt"
assert_contains "$TEST_TMP/renew.txt" "subject=O = p11smime tests, CN = Renewed"
assert_contains "$TEST_TMP/renew.txt" "ecdsa-with-SHA512"

# ------------------------------------------------------------- refusals

new_token
run csr --key "pkcs11:token=$TOKEN_LABEL;type=private" --email a@example.org
assert_exit 3 "csr: a URI naming four keys"
assert_contains "$ERR" "matches 4 private keys"
assert_matches "$ERR" '^  pkcs11:.*id=%03;object=p256;type=private'
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%09" --email a@example.org
assert_exit 3 "csr: no such key"
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%01" --email not-an-address -o "$TEST_TMP/x.csr"
assert_exit 2 "csr: a bad address"
assert_file_absent "$TEST_TMP/x.csr"
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%01" --email a@example.org --subject "/CN=a/XX=b"
assert_exit 2 "csr: an unknown attribute type"
assert_contains "$ERR" "'XX' is not an attribute type"
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%01" --email a@example.org --subject "C=Germany"
assert_exit 2 "csr: a country of more than two letters"
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%01" --email a@example.org --digest md5
assert_exit 2 "csr: --digest md5"

# A stray certificate (its key is nowhere on the token): exit 1, nothing written.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TEST_TMP/carol.key" 2>/dev/null
SAN_EMAIL=carol@example.org ca_issue "key:$TEST_TMP/carol.key" "$TEST_TMP/carol.pem"
before=$(object_count)
run import "$TEST_TMP/carol.pem"
assert_exit 1 "a stray certificate is refused"
assert_contains "$ERR" "no private key on token 'p11smime-test' matches"
assert_contains "$ERR" "--no-key"
assert_eq "$before" "$(object_count)" "nothing written for a stray certificate"
run import --ca "$TEST_TMP/carol.pem"
assert_exit 1 "--ca with an end-entity certificate"
assert_contains "$ERR" "is not a CA certificate"
run --json import --no-key --label carol "$TEST_TMP/carol.pem"
assert_exit 0 "--no-key: someone else's certificate"
assert_json "$OUT" '.import.private_key == null and (.import.certificate | test("object=carol;type=cert"))' "--no-key: stored without a key"
assert_json "$OUT" '.validation.certificates[0].verdict == "accepted"' "--no-key: judged and accepted"
assert_eq $((before + 1)) "$(object_count)" "one object written"
openssl x509 -in "$TEST_TMP/carol.pem" -outform DER -out "$TEST_TMP/carol.der"
run import --no-key "$TEST_TMP/carol.der"
assert_exit 0 "the same certificate in DER"
assert_contains "$OUT" "Already on the token"
run --json list --login "pkcs11:token=$TOKEN_LABEL;object=carol"
assert_json "$OUT" '.objects[0].pairing == "none"' "carol's certificate pairs with no key"

run import --ca "$CA_PEM"
assert_exit 0 "--ca: the test CA"
assert_contains "$OUT" "(none: stored without a key)"
assert_contains "$OUT" "CA certificate (Basic Constraints CA:TRUE): exempt"
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --list-objects --type cert 2>/dev/null |
	grep -q 'p11smime throwaway test CA' && pass "pkcs11-tool sees the CA certificate" ||
	fail "the CA certificate is not on the token"
run import --ca --no-key "$CA_PEM"
assert_exit 2 "--ca and --no-key together"

# A token that cannot sign with ECDSA: said before anything is signed.
# (SoftHSM 2.6 skips the first entry of a "-" list, hence the repeat.)
echo "slots.mechanisms = -CKM_ECDSA,CKM_ECDSA" >>"$SOFTHSM2_CONF"
run csr --key "pkcs11:token=$TOKEN_LABEL;id=%03" --email p256@example.org -o "$TEST_TMP/noecdsa.csr"
assert_exit 3 "csr: no CKM_ECDSA"
assert_contains "$ERR" "has no CKM_ECDSA"
assert_file_absent "$TEST_TMP/noecdsa.csr"

# --------------------------------------------------------------- PKCS#12

for alg in RSA EC; do
	new_token
	name=p12-$(tr 'A-Z' 'a-z' <<<"$alg")
	addr=$name@example.org
	case $alg in
	RSA) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TEST_TMP/$name.key" 2>/dev/null ;;
	EC) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$TEST_TMP/$name.key" 2>/dev/null ;;
	esac
	SAN_EMAIL=$addr ca_issue "key:$TEST_TMP/$name.key" "$TEST_TMP/$name.pem"
	openssl pkcs12 -export -inkey "$TEST_TMP/$name.key" -in "$TEST_TMP/$name.pem" -certfile "$CA_PEM" \
		-name "$name" -passout pass:s3cret -out "$TEST_TMP/$name.p12"
	before=$(object_count)
	P12PASS=wrong run import --p12-pass-source env:P12PASS "$TEST_TMP/$name.p12"
	assert_exit 4 "$alg: a wrong PKCS#12 password"
	assert_eq "$before" "$(object_count)" "$alg: nothing written with a wrong password"
	run import "$TEST_TMP/$name.p12"
	assert_exit 2 "$alg: PKCS#12 without a terminal or a source"
	assert_contains "$ERR" "--p12-pass-source"
	echo s3cret >"$TEST_TMP/p12pass"
	run import --p12-pass-source "file:$TEST_TMP/p12pass" "$TEST_TMP/$name.p12"
	assert_exit 0 "$alg: PKCS#12 import"
	assert_contains "$ERR" "warning: this private key existed in software before"
	assert_contains "$ERR" "CKA_LOCAL is false"
	assert_matches "$OUT" "^Imported certificate: pkcs11:.*id=%05;object=$name;type=cert"
	assert_matches "$OUT" "chain: +pkcs11:.*object=p11smime%20throwaway%20test%20CA;type=cert"
	assert_contains "$OUT" "verdict   ACCEPTED"
	run --json list --login "pkcs11:token=$TOKEN_LABEL;id=%05"
	assert_json "$OUT" '.objects[] | select(.class == "private-key") | .sensitive and (.extractable | not) and (.local | not) and .private and .sign' \
		"$alg: the key is sensitive, not extractable, private, and not CKA_LOCAL"
	assert_json "$OUT" '.objects[] | select(.class == "certificate") | .pairing == "confirmed"' "$alg: certificate paired"
	assert_json "$OUT" '[.objects[] | select(.class == "public-key")] | length == 1' "$alg: the public key beside it"
	priv=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" \
		--list-objects --type privkey 2>/dev/null | grep -A4 "label: *$name")
	grep -q 'Access:.*sensitive' <<<"$priv" && ! grep -qE 'Access:.* extractable|Access:.*local' <<<"$priv" &&
		pass "$alg: pkcs11-tool: sensitive, not extractable, not local" || fail "$alg: access: $priv"
	printf 'From: %s\nTo: bob@example.net\nSubject: p12\nContent-Type: text/plain\n\nhello %s\n' "$addr" "$name" >"$MSG"
	run sign --signer "$addr" -i "$MSG" -o "$TEST_TMP/$name.signed"
	assert_exit 0 "$alg: sign with the imported key"
	openssl cms -verify -in "$TEST_TMP/$name.signed" -CAfile "$CA_PEM" -out /dev/null 2>/dev/null &&
		pass "$alg: signature verifies" || fail "$alg: signature does not verify"
	openssl cms -encrypt -aes256 -in "$MSG" -out "$TEST_TMP/$name.enc" "$TEST_TMP/$name.pem" 2>/dev/null
	run decrypt -i "$TEST_TMP/$name.enc"
	assert_exit 0 "$alg: decrypt with the imported key"
	assert_contains "$OUT" "hello $name"

	before=$(object_count)
	P12PASS=s3cret run --json import --p12-pass-source env:P12PASS "$TEST_TMP/$name.p12"
	assert_exit 0 "$alg: PKCS#12 twice"
	assert_json "$OUT" '.import.already_present and (.import.key_written | not)' "$alg: already there, no key written"
	assert_eq "$before" "$(object_count)" "$alg: nothing written the second time"
done

# ------------------------------------------------------------ PIN policy

for flag in final-try locked to-be-changed; do
	mock_token "$flag"
	run csr --key "pkcs11:id=%01" --email mock@example.org
	assert_exit 3 "csr, $flag: refused"
	run import "$P11S_MOCK_CERT"
	assert_exit 3 "import, $flag: refused"
	run delete --yes "pkcs11:id=%01"
	assert_exit 3 "delete, $flag: refused"
	assert_eq 0 "$(mock_log_count '^C_Login ')" "$flag: no C_Login attempted"
	assert_eq 0 "$(mock_log_count '^C_(CreateObject|DestroyObject|GenerateKeyPair)')" "$flag: nothing changed"
done
# The mock has no key pair generation: said before any login.
mock_token final-try
run keygen --token mock --type rsa:2048 --label x
assert_exit 3 "keygen on a token without CKM_RSA_PKCS_KEY_PAIR_GEN"
assert_contains "$ERR" "has no CKM_RSA_PKCS_KEY_PAIR_GEN: it cannot generate RSA keys"
assert_eq 0 "$(mock_log_count '^C_Login ')" "keygen: no C_Login for a token that cannot"
mock_token final-try
run --allow-final-try csr --key "pkcs11:id=%01" --email mock@example.org
assert_exit 0 "csr, final try allowed: the mock key signs the request"
printf '%s\n' "$STDOUT" | openssl req -verify -noout 2>/dev/null && pass "the mock's request verifies" ||
	fail "the mock's request does not verify"
assert_eq 1 "$(mock_log_count '^C_Login ')" "one C_Login"
echo 999999 >"$TEST_TMP/wrong"
mock_token
run_p11smime --pin-source "file:$TEST_TMP/wrong" delete --yes "pkcs11:id=%01"
assert_exit 3 "delete: a wrong PIN"
assert_eq 1 "$(mock_log_count '^C_Login ')" "a wrong PIN is tried once"

finish
