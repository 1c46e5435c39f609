#!/usr/bin/env bash
# p11smime validate on a SoftHSM token holding good and bad certificates,
# in text and JSON, against the same certificates as files, with exit codes.
. "$(dirname "$0")/lib.sh"

new_token
W=$TEST_TMP/w
mkdir -p "$W"
PINOPT=(--pin-source "file:$PIN_FILE")
TOK="pkcs11:token=$TOKEN_LABEL"

# Stricter than lib.sh's assert_json (which passes on empty input): the
# filter must print exactly "true".
jassert() { # FILE FILTER [MSG]
	local got
	got=$(jq -c "$2" "$1" 2>&1)
	if [ "$got" = true ]; then
		pass "${3:-json: $2}"
	else
		fail "${3:-json} ($2 gave '${got:-nothing}')"
		_t_show_last
	fi
}
uri() { echo "$TOK;object=$1;type=cert"; }

# ------------------------------------------------------------- the token
# Besides the four good pairs from provisioning (rsa2048, rsa3072, p256, p384):
cat >"$W/nosan.ext" <<-'EOF'
	[ext]
	basicConstraints = critical, CA:FALSE
	keyUsage = critical, digitalSignature, keyEncipherment
	extendedKeyUsage = emailProtection
	subjectAltName = DNS:nosan.example.org
EOF
cat >"$W/server.ext" <<-'EOF'
	[ext]
	basicConstraints = critical, CA:FALSE
	keyUsage = critical, digitalSignature, keyAgreement
	extendedKeyUsage = serverAuth
	subjectAltName = email:server@example.org
EOF

# No e-mail in the SAN; the address is only in the subject.
token_keygen rsa:2048 10 nosan
ca_issue token:10 "$W/nosan.pem" "$W/nosan.ext" --email nosan@example.org
token_import_cert "$W/nosan.pem" 10 nosan
# EKU serverAuth only (EC).
token_keygen EC:prime256v1 11 server
ca_issue token:11 "$W/server.pem" "$W/server.ext" --email server@example.org
token_import_cert "$W/server.pem" 11 server
# Expired in 2021.
token_keygen rsa:2048 12 expired
ca_issue token:12 "$W/expired.pem" --email expired@example.org --start 20200101000000Z --end 20210101000000Z
token_import_cert "$W/expired.pem" 12 expired
# A certificate whose key is not on the token at all.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/nokey.key" 2>/dev/null
ca_issue key:"$W/nokey.key" "$W/nokey.pem" --email nokey@example.org
token_import_cert "$W/nokey.pem" 13 nokey
# A certificate whose CKA_ID names a different key.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/other.key" 2>/dev/null
ca_issue key:"$W/other.key" "$W/mismatch.pem" --email mismatch@example.org
token_keygen rsa:2048 14 mismatch
token_import_cert "$W/mismatch.pem" 14 mismatch
# An extractable key.
token_keygen rsa:2048 15 extractable --extractable
ca_issue token:15 "$W/extractable.pem" --email extractable@example.org
token_import_cert "$W/extractable.pem" 15 extractable

# ------------------------------------------------- the whole token, JSON
run_p11smime "${PINOPT[@]}" --json validate
assert_exit 1 "a token with rejected certificates exits 1"
J=$OUT
cp "$J" "$W/all.json"
cert() { echo ".certificates[] | select(.subject | test(\"CN=$1(,|$)\"))"; }
jassert "$J" '.certificates | length == 10' "ten certificates reported"
jassert "$J" '[.certificates[] | .checks | length == 6] | all' "every rule reported for every certificate"
jassert "$J" '.summary == {"certificates":10,"accepted":8,"rejected":2,"errors":0}' "summary counts"
for c in rsa2048 rsa3072 p256 p384; do
	jassert "$J" "$(cert "p11smime test $c") | .verdict == \"accepted\" and .usable_for_outgoing and .can_sign and .can_encrypt and .ca == false" "good $c: accepted, can sign and encrypt"
	jassert "$J" "$(cert "p11smime test $c") | [.key.checks[].result] == [\"pass\",\"pass\",\"pass\",\"pass\"]" "good $c: every key check passes"
	jassert "$J" "$(cert "p11smime test $c") | .key.sensitive == true and .key.extractable == false and (.key.uri | startswith(\"pkcs11:\"))" "good $c: hardware-bound key with a URI"
	jassert "$J" "$(cert "p11smime test $c") | .emails == [\"$c@example.org\"] and (.source | startswith(\"pkcs11:\")) and (.source | contains(\"type=cert\"))" "good $c: source URI and e-mail"
done
jassert "$J" "$(cert "p11smime test p256") | .checks[] | select(.rule == \"public-key-algorithm\") | .message == \"EC, P-256\"" "EC curve named"

N=$(cert nosan@example.org)
jassert "$J" "$N | .verdict == \"rejected\" and .usable_for_outgoing == false and .can_sign == false" "no SAN e-mail: rejected"
jassert "$J" "$N | .checks[] | select(.rule == \"san-email\") | .result == \"fail\" and (.message | contains(\"nosan@example.org in the subject's emailAddress does not count\"))" "no SAN e-mail: says the subject address does not count"
jassert "$J" "$N | .emails == []" "no SAN e-mail: no emails"

S=$(cert server@example.org)
jassert "$J" "$S | .verdict == \"rejected\"" "EKU serverAuth only: rejected"
jassert "$J" "$S | .checks[] | select(.rule == \"extended-key-usage\") | .result == \"fail\" and (.message | contains(\"serverAuth\"))" "EKU serverAuth only: reason"

E=$(cert expired@example.org)
jassert "$J" "$E | .verdict == \"accepted\" and .usable_for_outgoing == false and .can_sign == false and .can_encrypt == false and .in_validity == false" "expired: accepted for upload, not usable for outgoing mail"
jassert "$J" "$E | .checks[] | select(.rule == \"validity\") | .result == \"fail\" and .affects_verdict == false and (.message | contains(\"expired 2021-01-01\"))" "expired: validity fails with the date"

K=$(cert nokey@example.org)
jassert "$J" "$K | .verdict == \"accepted\" and .can_sign == false and .can_encrypt == false and .key.present == false" "key missing: no signing, no encryption"
jassert "$J" "$K | .key.checks[0] | .check == \"key-present\" and .result == \"fail\"" "key missing: key-present fails"
jassert "$J" "$K | .cannot_sign_reason | contains(\"no private key\")" "key missing: reason given"

M=$(cert mismatch@example.org)
jassert "$J" "$M | .key.present == true and .key.matches == false and .can_sign == false" "CKA_ID mismatch: different key, cannot sign"
jassert "$J" "$M | .key.checks[] | select(.check == \"key-match\") | .result == \"fail\"" "CKA_ID mismatch: key-match fails"
jassert "$J" "$M | .checks[] | select(.rule == \"private-key-algorithm\") | .result == \"skip\"" "CKA_ID mismatch: the stranger's algorithm is not judged"

X=$(cert extractable@example.org)
jassert "$J" "$X | .verdict == \"accepted\" and .key.extractable == true and .can_sign == true" "extractable: accepted, usable"
jassert "$J" "$X | .key.checks[] | select(.check == \"key-hardware-bound\") | .result == \"fail\" and (.message | contains(\"CKA_EXTRACTABLE is true\"))" "extractable: not hardware-bound"

# No anchors given and no CA on the token: nothing is trusted.
jassert "$J" '[.certificates[].chain.result == "skip"] | all' "no anchors: chain skipped"

# ----------------------------------------------------- text, one by one
run_p11smime "${PINOPT[@]}" validate "$(uri rsa2048)"
assert_exit 0 "good certificate by URI: exit 0"
assert_matches "$OUT" '^    pass  san-email +e-mail address in the Subject Alternative Name: rsa2048@example.org'
assert_matches "$OUT" '^    pass  key-hardware-bound +CKA_SENSITIVE true and CKA_EXTRACTABLE false'
assert_matches "$OUT" '^  verdict   ACCEPTED, usable for outgoing mail'
assert_contains "$OUT" "1 certificate judged"

run_p11smime "${PINOPT[@]}" validate "$(uri nosan)"
assert_exit 1 "no SAN e-mail by URI: exit 1"
assert_matches "$OUT" '^    FAIL  san-email +the Subject Alternative Name holds no e-mail address'
assert_matches "$OUT" '^  verdict   REJECTED by san-email; not usable for outgoing mail'

run_p11smime "${PINOPT[@]}" validate "$(uri server)"
assert_exit 1
assert_matches "$OUT" '^    FAIL  extended-key-usage +Extended Key Usage: serverAuth; it must contain emailProtection'

run_p11smime "${PINOPT[@]}" validate "$(uri expired)"
assert_exit 0 "expired but otherwise good: accepted, exit 0"
assert_matches "$OUT" '^    FAIL  validity +expired 2021-01-01T00:00:00Z'
assert_contains "$OUT" "ACCEPTED, but NOT USABLE for outgoing mail"

# --at moves the judgement into the certificate's lifetime.
run_p11smime "${PINOPT[@]}" --json validate --at 2020-06-01 "$(uri expired)"
assert_exit 0
jassert "$OUT" '.certificates[0].usable_for_outgoing == true and .certificates[0].can_sign == true and .at == "2020-06-01T00:00:00Z"' "--at 2020-06-01: usable then"

run_p11smime "${PINOPT[@]}" validate "$(uri mismatch)"
assert_matches "$OUT" '^    FAIL  key-match +it is a different key'
assert_matches "$OUT" 'sign: no|REJECTED' # accepted: the usage lines say why not
assert_contains "$OUT" "the private key does not match the certificate"

run_p11smime "${PINOPT[@]}" validate "$(uri nokey)"
assert_matches "$OUT" "^    FAIL  key-present +no private key on the token for this certificate: no private key on the token has this certificate's CKA_ID"

# ------------------------------------------- the same certificate as a file
for c in nosan server expired nokey extractable; do
	run_p11smime --json validate "$W/$c.pem"
	filerc=$RC
	file_json=$OUT
	run_p11smime "${PINOPT[@]}" --json validate "$(uri "$c")"
	assert_eq "$RC" "$filerc" "$c: same exit code from file and token"
	f=$(jq -c '.certificates[0] | [.verdict, .usable_for_outgoing, ([.checks[] | select(.rule != "private-key-algorithm") | [.rule, .result]])]' "$file_json")
	t=$(jq -c '.certificates[0] | [.verdict, .usable_for_outgoing, ([.checks[] | select(.rule != "private-key-algorithm") | [.rule, .result]])]' "$OUT")
	assert_eq "$t" "$f" "$c: same verdict and rule results from file and token"
	assert_matches "$file_json" '"verdict": "(accepted|rejected)"' 
	jassert "$file_json" '.certificates[0].key == null and .certificates[0].origin == "file" and .certificates[0].format == "PEM"' "$c file: no key known"
	jassert "$file_json" '.certificates[0].checks[] | select(.rule == "private-key-algorithm") | .result == "skip"' "$c file: private-key-algorithm skipped"
done

# DER and PKCS#12 from the command line; the PKCS#12 key is a software key.
openssl x509 -in "$W/nokey.pem" -outform DER -out "$W/nokey.der"
run_p11smime --json validate "$W/nokey.der"
assert_exit 0 "DER file: exit 0"
jassert "$OUT" '.certificates[0].format == "DER" and .certificates[0].verdict == "accepted"'
openssl pkcs12 -export -inkey "$W/nokey.key" -in "$W/nokey.pem" -certfile "$CA_PEM" \
	-passout pass:p12secret -out "$W/nokey.p12"
run_p11smime --json validate "$W/nokey.p12"
assert_exit 4 "PKCS#12 without its password: exit 4"
assert_contains "$ERR" "nokey.p12: this PKCS#12 file needs a password (--p12-pass-source)"
P12PASS=p12secret run_p11smime --json validate --p12-pass-source env:P12PASS "$W/nokey.p12"
assert_exit 0 "PKCS#12 with --p12-pass-source env:"
jassert "$OUT" '.certificates | length == 2' "PKCS#12: the certificate and its CA"
jassert "$OUT" '.certificates[0].key.present == true and .certificates[0].key.matches == true and .certificates[0].key.on_token == false' "PKCS#12: its key is known and matches"
jassert "$OUT" '.certificates[0].checks[] | select(.rule == "private-key-algorithm") | .result == "pass"' "PKCS#12: private-key-algorithm judged"
jassert "$OUT" '.certificates[1].ca == true and .certificates[1].verdict == "accepted"' "PKCS#12: the CA is exempt"
echo p12secret >"$W/p12pass"
run_p11smime validate --p12-pass-source "file:$W/p12pass" "$W/nokey.p12"
assert_exit 0 "--p12-pass-source file:"
run_p11smime validate --p12-pass-source "pass:p12secret" "$W/nokey.p12"
assert_exit 2 "--p12-pass-source pass: is refused"

# --------------------------------------------------------------- chains
run_p11smime "${PINOPT[@]}" --json validate --ca "$CA_PEM" "$(uri rsa2048)"
jassert "$OUT" '.certificates[0].chain.result == "pass" and (.certificates[0].chain.path | length == 2)' "--ca: chain built"
run_p11smime --json validate --ca "$W/nokey.pem" "$W/rsa2048-not-there.pem" "$CERTS_DIR/rsa2048.pem"
assert_exit 4 "a missing file: exit 4, the other still reported"
jassert "$OUT" '.certificates | length == 1' "the good file is still reported"
jassert "$OUT" '.certificates[0].chain.result == "fail" and (.certificates[0].chain.message | contains("no chain to a supplied anchor"))' "wrong anchor: no chain, and why"
jassert "$OUT" '.errors[0].source | endswith("rsa2048-not-there.pem")' "the error names the file"
# The CA certificate put on the token is an anchor by itself.
token_import_cert "$CA_PEM" 20 testca
run_p11smime "${PINOPT[@]}" --json validate "$(uri p384)"
jassert "$OUT" '.certificates[0].chain.result == "pass"' "CA on the token: chain to it without --ca"
run_p11smime "${PINOPT[@]}" --json validate "$TOK;object=testca;type=cert"
assert_exit 0
jassert "$OUT" '.certificates[0].ca == true and ([.certificates[0].checks[] | select(.rule != "validity") | .result == "skip"] | all)' "CA certificate: exempt, each rule skipped"

# --------------------------------------------------------------- errors
printf 'this is not a certificate\n' >"$W/garbage.pem"
head -c 300 "$W/nokey.der" >"$W/truncated.der"
run_p11smime validate "$W/garbage.pem" "$CERTS_DIR/p256.pem" "$W/truncated.der"
assert_exit 4 "files that are not certificates: exit 4"
assert_contains "$ERR" "$W/garbage.pem: not a certificate file"
assert_contains "$ERR" "$W/truncated.der: not a certificate"
assert_matches "$OUT" '^certificate 1/1: .*/p256.pem \[0\]'
assert_contains "$OUT" "1 certificate judged"

# A mixed bundle, TRUSTED CERTIFICATE included, certificate by certificate.
{ cat "$CERTS_DIR/rsa2048.pem"; openssl x509 -in "$W/nosan.pem" -trustout -addtrust emailProtection; cat "$CA_PEM"; } >"$W/bundle.pem"
run_p11smime --json validate "$W/bundle.pem"
assert_exit 1 "bundle with a rejected certificate: exit 1"
jassert "$OUT" '[.certificates[] | [.index, .verdict, .ca]] == [[0,"accepted",false],[1,"rejected",false],[2,"accepted",true]]' "bundle: each certificate, in order"

# A folder: certificates judged, other files skipped without error.
mkdir "$W/dir" "$W/dir/sub"
cp "$CERTS_DIR/rsa2048.pem" "$W/dir/a.pem"
cp "$W/nokey.key" "$W/dir/a.key"
cp "$W/nokey.der" "$W/dir/sub/b.der"
run_p11smime --json validate "$W/dir"
assert_exit 0 "folder: keys skipped, certificates accepted"
jassert "$OUT" '(.certificates | length == 2) and (.skipped | length == 1) and (.skipped[0] | contains("a.key"))'

# Token errors: exit 3; the files are still judged.
run_p11smime --module /nonexistent/module.so validate "$TOK" "$CERTS_DIR/p256.pem"
assert_exit 3 "bad module: exit 3"
assert_contains "$OUT" "1 certificate judged"
run_p11smime "${PINOPT[@]}" validate "pkcs11:token=no-such-token"
assert_exit 3 "a URI matching no token: exit 3"
run_p11smime validate --warn-days x
assert_exit 2 "bad --warn-days: usage"
run_p11smime validate --at yesterday
assert_exit 2 "bad --at: usage"

# --no-login: no PIN needed; keys not looked at, and the report says so.
run_p11smime --json validate --no-login "$(uri rsa2048)"
assert_exit 0
jassert "$OUT" '.certificates[0].key.checked == false and (.certificates[0].key.reason | contains("--no-login"))' "--no-login: key checks skipped, said why"

# --warn-days: the good certificates expire in about 3 years.
run_p11smime "${PINOPT[@]}" --json validate --warn-days 2000 "$(uri rsa2048)"
jassert "$OUT" '.certificates[0].warnings[0] | contains("within the 2000-day warning period")' "--warn-days 2000 warns"
run_p11smime "${PINOPT[@]}" --json validate "$(uri rsa2048)"
jassert "$OUT" '.certificates[0].warnings == []' "default 30 days: no warning"

finish
