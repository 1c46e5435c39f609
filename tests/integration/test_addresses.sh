#!/usr/bin/env bash
# E-mail addresses read out of certificates: an rfc822Name that is not a
# mailbox is no address (validate, list, sign, encrypt), and verify finds
# the sender in the subject's emailAddress as RFC 8550 allows.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
PINOPT=(--pin-source "file:$PIN_FILE")
TOK="pkcs11:token=$TOKEN_LABEL"

ext() { # FILE SAN
	cat >"$1" <<-EOF
		[ext]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature, keyEncipherment
		extendedKeyUsage = emailProtection
		subjectAltName = $2
	EOF
}

# ------------------------------------------------ validate: not a mailbox
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/sw.key" 2>/dev/null
ext "$T/nobody.ext" "email:nobody"
ca_issue "key:$T/sw.key" "$T/nobody.pem" "$T/nobody.ext" --cn Nobody --no-email-dn
ext "$T/angle.ext" "email:<alice@example.org>"
ca_issue "key:$T/sw.key" "$T/angle.pem" "$T/angle.ext" --cn Angle --no-email-dn
ext "$T/mixed.ext" "email:@example.org, email:mixed@example.org"
ca_issue "key:$T/sw.key" "$T/mixed.pem" "$T/mixed.ext" --cn Mixed --no-email-dn

run_p11smime --json validate "$T/nobody.pem"
assert_exit 1 "SAN 'nobody' only: rejected"
assert_json "$OUT" '.certificates[0].verdict == "rejected" and .certificates[0].usable_for_outgoing == false' \
	"'nobody': rejected, not usable for outgoing mail"
assert_json "$OUT" '.certificates[0].checks[] | select(.rule == "san-email") | .result == "fail" and (.message | contains("'"'nobody' is not an e-mail address (no @)"'"))' \
	"'nobody': the san-email reason names the entry"
assert_json "$OUT" '.certificates[0].warnings | index("'"'nobody' is not an e-mail address (no @)"'") != null' \
	"'nobody': named in warnings"
assert_json "$OUT" '.certificates[0].emails == []' "'nobody' is not listed as an address"
run_p11smime validate "$T/nobody.pem"
assert_contains "$OUT" "'nobody' is not an e-mail address (no @)"
assert_matches "$OUT" '^  verdict   REJECTED by san-email'

run_p11smime --json validate "$T/angle.pem"
assert_exit 1 "SAN '<alice@example.org>' only: rejected"
assert_json "$OUT" '.certificates[0].checks[] | select(.rule == "san-email") | .result == "fail" and (.message | contains("angle brackets"))'

run_p11smime --json validate "$T/mixed.pem"
assert_exit 0 "one mailbox beside a bad entry: accepted"
assert_json "$OUT" '.certificates[0].verdict == "accepted" and .certificates[0].emails == ["mixed@example.org"]'
assert_json "$OUT" '.certificates[0].warnings | index("'"'@example.org' is not an e-mail address (nothing before the @)"'") != null' \
	"the bad entry beside a good one is a warning"

# ------------------------------------- list and sign: token certificates
token_keygen rsa:2048 40 atonly
ext "$T/atonly.ext" "email:@example.org"
ca_issue token:40 "$T/atonly.pem" "$T/atonly.ext" --cn "At only" --no-email-dn
token_import_cert "$T/atonly.pem" 40 atonly

run_p11smime --json list "$TOK;object=atonly;type=cert"
assert_exit 0 "list the certificate"
assert_json "$OUT" '[.. | objects | select(has("emails")) | .emails] | length > 0 and all(. == [])' \
	"list: '@example.org' is not an e-mail address"

printf 'From: x@example.org\nTo: y@example.org\nSubject: t\n\nhello\n' >"$T/msg.eml"
run_p11smime "${PINOPT[@]}" sign --signer @example.org -i "$T/msg.eml" -o "$T/signed.eml"
assert_exit 2 "sign --signer @example.org: no certificate is picked"
assert_contains "$ERR" "nor an e-mail address (nothing before the @)"
assert_file_absent "$T/signed.eml"
run_p11smime "${PINOPT[@]}" sign --signer '<rsa2048@example.org>' -i "$T/msg.eml" -o "$T/signed.eml"
assert_exit 2 "sign --signer '<addr>': refused"
assert_contains "$ERR" "angle brackets"
run_p11smime "${PINOPT[@]}" sign --signer RSA2048@Example.ORG -i "$T/msg.eml" -o "$T/signed.eml"
assert_exit 0 "sign --signer matches a mailbox without regard to case"

# ---------------------------------------------- encrypt: recipient address
run_p11smime encrypt --recipient '<rsa2048@example.org>' -i "$T/msg.eml" -o "$T/enc.eml"
assert_exit 2 "encrypt --recipient '<addr>': not an e-mail address"
assert_contains "$ERR" "is not an e-mail address (angle brackets"
assert_file_absent "$T/enc.eml"

# --------------------------------- verify: the subject's emailAddress (RFC 8550)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/legacy.key" 2>/dev/null
cat >"$T/legacy.ext" <<-'EOF'
	[ext]
	basicConstraints = critical, CA:FALSE
	keyUsage = critical, digitalSignature, keyAgreement
	extendedKeyUsage = emailProtection
EOF
ca_issue "key:$T/legacy.key" "$T/legacy.pem" "$T/legacy.ext" --email Legacy@Example.org --cn Legacy
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/alice.key" 2>/dev/null
SAN_EMAIL=alice@example.org ca_issue "key:$T/alice.key" "$T/alice.pem" smime-ec --cn Alice

printf 'Content-Type: text/plain\n\nHello\n' >"$T/entity.txt"
signed() { # CERT KEY FROM OUT
	openssl cms -sign -signer "$1" -inkey "$2" -in "$T/entity.txt" -out "$T/part.eml" ||
		fail "openssl cms -sign"
	{ printf 'From: Someone <%s>\nTo: bob@example.org\nSubject: s\n' "$3"; cat "$T/part.eml"; } >"$4"
}

signed "$T/legacy.pem" "$T/legacy.key" legacy@example.org "$T/legacy.eml"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/legacy.eml"
assert_exit 0 "From only in the subject's emailAddress: good"
assert_json "$OUT" '.verdict == "good" and .sender_matches == true and .signers[0].sender_matched_by == "subject-emailAddress"'
assert_json "$OUT" '.signers[0].emails == []' "emails lists the subjectAltName, which holds none"
run_p11smime verify --trust "$CA_PEM" -i "$T/legacy.eml"
assert_exit 0 "text: good"
assert_contains "$OUT" "in its subject's emailAddress"
assert_contains "$OUT" "good signature by legacy@example.org"

signed "$T/alice.pem" "$T/alice.key" ALICE@example.org "$T/alice.eml"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/alice.eml"
assert_exit 0 "From in the SAN (another case): good"
assert_json "$OUT" '.signers[0].sender_matched_by == "subjectAltName"'
run_p11smime verify --trust "$CA_PEM" -i "$T/alice.eml"
assert_contains "$OUT" "(in its subjectAltName)"

signed "$T/legacy.pem" "$T/legacy.key" ceo@example.org "$T/spoof.eml"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/spoof.eml"
assert_exit 1 "From in neither place: sender-mismatch"
assert_json "$OUT" '.verdict == "sender-mismatch" and .signers[0].sender_matched_by == null'

# The upload rules are unchanged: the legacy certificate still fails san-email.
run_p11smime --json validate "$T/legacy.pem"
assert_exit 1 "validate: an address only in the subject does not count"
assert_json "$OUT" '.certificates[0].checks[] | select(.rule == "san-email") | .result == "fail"'

finish
