#!/usr/bin/env bash
# p11smime list: pairing, URIs that round-trip, PIN policy, selection errors.
. "$(dirname "$0")/lib.sh"

new_token
SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so

run_p11smime list --help
assert_exit 0 "list --help"
assert_contains "$OUT" "--login"
assert_contains "$OUT" "Exit codes"

# Without login: certificates and public keys; the private keys are hidden.
run_p11smime --json list
assert_exit 0 "list without login"
assert_json "$OUT" '[.objects[] | select(.class == "certificate")] | length == 4' "4 certificates"
assert_json "$OUT" '[.objects[] | select(.class == "private-key")] | length == 0' "no private keys seen"
assert_json "$OUT" '[.objects[] | select(.class == "certificate" and .pairing == "not-logged-in")] | length == 4' "pairing: not-logged-in"

# With login: the four pairs, each confirmed by comparing public keys.
run_p11smime --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "list --login --json"
cp "$OUT" "$TEST_TMP/all.json"
assert_json "$OUT" '[.objects[] | select(.class == "certificate")] | length == 4' "4 certificates"
assert_json "$OUT" '[.objects[] | select(.class == "private-key")] | length == 4' "4 private keys"
assert_json "$OUT" '[.objects[] | select(.class == "public-key")] | length == 4' "4 public keys"
assert_json "$OUT" '[.objects[] | select(.class == "certificate" and .pairing == "confirmed" and .private_key != null)] | length == 4' "4 pairs confirmed"
assert_json "$OUT" '[.objects[] | select(.class == "certificate") | .pairing_evidence] | sort == ["key-attributes","key-attributes","public-key-object","public-key-object"]' "RSA by key attributes, EC by the public key object"
for k in rsa2048:RSA:2048 rsa3072:RSA:3072 p256:EC:256 p384:EC:384; do
	IFS=: read -r label type bits <<<"$k"
	c=".objects[] | select(.class == \"certificate\" and .label == \"$label\")"
	p=".objects[] | select(.class == \"private-key\" and .label == \"$label\")"
	assert_json "$OUT" "$c | .emails == [\"$label@example.org\"] and .key_algorithm == \"$type\" and .key_bits == $bits" "$label: certificate facts"
	assert_json "$OUT" "$c | (.not_before | test(\"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$\")) and (.subject | contains(\"$label\")) and (.serial | length > 0)" "$label: subject, serial, RFC 3339 validity"
	assert_json "$OUT" "$p | .key_type == \"$type\" and .key_bits == $bits and .sensitive and (.extractable | not) and .sign" "$label: private key on the token, sensitive, not extractable"
	assert_json "$OUT" "[$c | .private_key] == [$p | .uri] and [$p | .certificate] == [$c | .uri]" "$label: cert and key point at each other"
done
assert_json "$OUT" '.objects[] | select(.label == "p256" and .class == "certificate") | .curve == "P-256"' "curve name"

# Round trip: every printed URI selects exactly its object.
n=0
bad=0
while read -r uri; do
	n=$((n + 1))
	run_p11smime --pin-source "file:$PIN_FILE" --json list --login "$uri"
	if [ "$RC" != 0 ] || ! jq -e --arg u "$uri" '.objects | length == 1 and .[0].uri == $u' "$OUT" >/dev/null; then
		bad=$((bad + 1))
		fail "URI does not select exactly its object: $uri"
		_t_show_last
	fi
done < <(jq -r '.objects[].uri' "$TEST_TMP/all.json")
[ "$n" = 12 ] && [ "$bad" = 0 ] && pass "all $n URIs round-trip" || fail "round trip: $n URIs, $bad bad"

# Human output: readable, each object with its URI.
run_p11smime --pin-source "file:$PIN_FILE" list --login
assert_exit 0 "list --login (text)"
assert_eq 12 "$(grep -c '^  uri: *pkcs11:' "$OUT")" "12 objects, each with a URI"
assert_eq 4 "$(grep -c 'public key confirmed' "$OUT")" "4 confirmed pairings shown"

# A certificate whose CKA_ID points at a different key; one with no key.
token_import_cert "$CERTS_DIR/p256.pem" 01 wrong-rsa
token_import_cert "$CERTS_DIR/rsa2048.pem" 03 wrong-ec
token_import_cert "$CERTS_DIR/rsa3072.pem" 99 lonely
run_p11smime --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "list with bad pairs"
assert_json "$OUT" '.objects[] | select(.label == "wrong-rsa") | .pairing == "mismatch" and .private_key == null and (.same_id_key | test("id=%01.*type=private"))' "CKA_ID 01, different RSA key: mismatch"
assert_json "$OUT" '.objects[] | select(.label == "wrong-ec") | .pairing == "mismatch" and .private_key == null' "CKA_ID 03, an EC key: mismatch"
assert_json "$OUT" '.objects[] | select(.label == "lonely") | .pairing == "none" and .private_key == null' "no key: none"
assert_json "$OUT" '[.objects[] | select(.class == "certificate" and .pairing == "confirmed")] | length == 4' "the good pairs still confirmed"
run_p11smime --pin-source "file:$PIN_FILE" list --login 'pkcs11:object=wrong-rsa'
assert_contains "$OUT" "MISMATCH"
# Negative control: the same check on a good pair does not say mismatch.
run_p11smime --pin-source "file:$PIN_FILE" list --login 'pkcs11:object=rsa2048;type=cert'
assert_not_contains "$OUT" "MISMATCH"

# PIN sources: env:, fd:, the URI's pin-value and pin-source.
MY_PIN=$PIN run_p11smime --pin-source env:MY_PIN --json list --login 'pkcs11:type=private'
assert_exit 0 "env: PIN source"
assert_json "$OUT" '.objects | length == 4' "env: 4 private keys"
run_p11smime --pin-source fd:5 --json list --login 'pkcs11:type=private' 5<"$PIN_FILE"
assert_exit 0 "fd: PIN source"
run_p11smime --json list --login "pkcs11:token=$TOKEN_LABEL;type=private?pin-value=$PIN"
assert_exit 0 "pin-value in the URI"
assert_json "$OUT" '.objects | length == 4' "pin-value: 4 private keys"
run_p11smime --json list --login "pkcs11:token=$TOKEN_LABEL;type=private?pin-source=file:$PIN_FILE"
assert_exit 0 "pin-source in the URI"
run_p11smime --pin-source bogus:x list --login
assert_exit 2 "malformed --pin-source"
assert_contains "$ERR" "PIN source is not one of file:PATH"

# No PIN source and no terminal: a clear message, no login attempt.
run_p11smime list --login
assert_exit 3 "no PIN, no terminal"
assert_contains "$ERR" "--pin-source"

# A wrong PIN: exit 3, a message, exactly one C_Login.
echo 999999 >"$TEST_TMP/wrong"
export PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy.log
# pkcs11-spy allocates a new function list on every C_GetFunctionList and
# leaks the previous one (libp11 and p11smime each ask once); it is unloaded
# before LeakSanitizer reports, so no suppression can name it.
saved_asan=${ASAN_OPTIONS:-}
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
run_p11smime --module "$SPY" --pin-source "file:$TEST_TMP/wrong" list --login
assert_exit 3 "wrong PIN"
assert_contains "$ERR" "did not accept the PIN"
assert_eq 1 "$(grep -c 'C_Login' "$TEST_TMP/spy.log")" "exactly one C_Login"
# Negative control: the right PIN through the spy also logs in once, and works.
rm -f "$TEST_TMP/spy.log"
run_p11smime --module "$SPY" --pin-source "file:$PIN_FILE" list --login
assert_exit 0 "right PIN through pkcs11-spy"
assert_eq 1 "$(grep -c 'C_Login' "$TEST_TMP/spy.log")" "one C_Login with the right PIN"
# One enumeration of the token: a single C_FindObjectsInit, whatever the object count.
assert_eq 1 "$(grep -c 'C_FindObjectsInit' "$TEST_TMP/spy.log")" "one C_FindObjectsInit for the whole listing"
# A URI naming an id reads only the objects with that id (one search with
# CKA_ID in its template), not the whole token; pairing still confirmed.
full_gets=$(grep -c 'C_GetAttributeValue' "$TEST_TMP/spy.log")
rm -f "$TEST_TMP/spy.log"
run_p11smime --module "$SPY" --pin-source "file:$PIN_FILE" --json list --login 'pkcs11:id=%01;type=cert'
assert_exit 0 "list one certificate by id through pkcs11-spy"
assert_json "$OUT" '[.objects[] | select(.label == "rsa2048")] | length == 1 and .[0].pairing == "confirmed" and (.[0].private_key | test("id=%01;.*type=private"))' "the id's certificate, paired with its key"
# The same objects, paired the same way, as the whole listing shows them.
cp "$OUT" "$TEST_TMP/id01.json"
run_p11smime --pin-source "file:$PIN_FILE" --json list --login
assert_exit 0 "the whole listing, to compare"
assert_eq "$(jq -c '[.objects[] | select(.class == "certificate" and .id == "01")]' "$OUT")" \
	"$(jq -c '.objects' "$TEST_TMP/id01.json")" "the certificates with id 01, as in the whole listing"
assert_eq 1 "$(grep -c 'C_FindObjectsInit' "$TEST_TMP/spy.log")" "one search for an id"
sed -n '/C_FindObjectsInit/,/Returned/p' "$TEST_TMP/spy.log" | grep -q 'CKA_ID' ||
	fail "the search by id has no CKA_ID in its template"
id_gets=$(grep -c 'C_GetAttributeValue' "$TEST_TMP/spy.log")
[ "$id_gets" -gt 0 ] && [ $((id_gets * 3)) -lt "$full_gets" ] ||
	fail "a search by id read $id_gets attributes sets, the whole listing $full_gets"
# By label only: the search by label, then one by the match's id, for the pairing.
rm -f "$TEST_TMP/spy.log"
run_p11smime --module "$SPY" --pin-source "file:$PIN_FILE" --json list --login 'pkcs11:object=p256;type=cert'
assert_exit 0 "list one certificate by label through pkcs11-spy"
assert_json "$OUT" '.objects | length == 1 and .[0].label == "p256" and .[0].pairing == "confirmed"' "the label's certificate, paired"
assert_json "$OUT" ".objects[0].private_key == \"$(jq -r '.objects[] | select(.class == "private-key" and .label == "p256") | .uri' "$TEST_TMP/all.json")\"" "paired with the key the whole listing pairs it with"
assert_eq 2 "$(grep -c 'C_FindObjectsInit' "$TEST_TMP/spy.log")" "a search by label, then one by id"
# Tokens are filtered before any login: no login on a token the URI excludes.
rm -f "$TEST_TMP/spy.log"
run_p11smime --module "$SPY" --pin-source "file:$TEST_TMP/wrong" list --login 'pkcs11:token=no-such-token'
assert_exit 3 "URI matching no token"
assert_eq 0 "$(grep -c 'C_Login' "$TEST_TMP/spy.log")" "no C_Login for an excluded token"
unset PKCS11SPY PKCS11SPY_OUTPUT
export ASAN_OPTIONS=$saved_asan

# A key that wants the PIN for every use is shown as such.
p11tool_token --keypairgen --key-type rsa:2048 --id 0a --label always --always-auth \
	--usage-sign --usage-decrypt >/dev/null 2>&1 || fail "could not make an always-authenticate key"
run_p11smime --pin-source "file:$PIN_FILE" --json list --login 'pkcs11:object=always;type=private'
assert_exit 0 "list the always-authenticate key"
assert_json "$OUT" '.objects | length == 1 and .[0].always_authenticate and .[0].id == "0a"' "always_authenticate true"
assert_json "$TEST_TMP/all.json" '[.objects[] | select(.class == "private-key") | .always_authenticate] | all(. == false)' "the provisioned keys do not need it"

# Selection errors.
run_p11smime list 'pkcs11:object=no-such-object'
assert_exit 3 "URI matching no object"
assert_contains "$ERR" "no object matches pkcs11:object=no-such-object"
run_p11smime --pin-source "file:$PIN_FILE" list --login --select "pkcs11:token=$TOKEN_LABEL"
assert_exit 3 "URI selecting several certificates"
assert_contains "$ERR" "matches 7 certificates"
assert_eq 7 "$(grep -c '^  pkcs11:.*type=cert' "$ERR")" "every candidate's URI listed"
run_p11smime --pin-source "file:$PIN_FILE" --json list --login --select P384@Example.ORG
assert_exit 0 "select by e-mail, any case"
assert_json "$OUT" '.objects | length == 2 and .[0].label == "p384" and .[0].class == "certificate" and .[1].class == "private-key"' "the certificate and its key"
# rsa2048's certificate is on the token twice now (once as wrong-ec).
run_p11smime list --select rsa2048@example.org
assert_exit 3 "an address on two certificates"
assert_contains "$ERR" "matches 2 certificates"
assert_contains "$ERR" "object=wrong-ec;type=cert"
run_p11smime --pin-source "file:$PIN_FILE" --json list --login --select "$(jq -r '.objects[] | select(.class == "private-key" and .label == "p384") | .uri' "$TEST_TMP/all.json")"
assert_exit 0 "select by the key's URI"
assert_json "$OUT" '.objects[0].label == "p384" and .objects[0].class == "certificate"' "the key's certificate"
run_p11smime list --select nobody@example.org
assert_exit 3 "an address no certificate has"
assert_contains "$ERR" "nobody@example.org"

# A key without a certificate, named with a pin-value: the message keeps the PIN out.
pin=$(head -n1 "$PIN_FILE")
run_p11smime list --login --select "pkcs11:object=always;type=private?pin-value=$pin"
assert_exit 3 "a key no certificate pairs with"
assert_contains "$ERR" "names a private key, but no certificate"
assert_contains "$ERR" "pin-value=(hidden)"
assert_not_contains "$ERR" "pin-value=$pin"

# The uninitialised token: an error, quickly, not a hang.
run_p11smime list --login 'pkcs11:token='
assert_exit 3 "uninitialised token"
assert_contains "$ERR" "not initialised"
# Named by the module's own slot description, not only its number.
assert_contains "$ERR" "(SoftHSM slot ID 0x"

finish
