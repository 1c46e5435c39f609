#!/usr/bin/env bash
# verify -o keeps the message (issue 10, point 5): the outer headers, Content-*
# replaced by the signed entity's, then the signed entity, as decrypt does;
# --entity-only gives the entity as signed.  And a message that is not
# signed gets a sentence, not OpenSSL's error codes (point 4).
. "$(dirname "$0")/lib.sh"

new_token
PS=(--pin-source "file:$PIN_FILE")
W=$TEST_TMP/w
mkdir -p "$W"
printf '%s\n' 'From: rsa2048@example.org' 'To: p256@example.org' 'Subject: pipeline' \
	'Message-ID: <pipe@example.org>' 'MIME-Version: 1.0' \
	'Content-Type: text/plain; charset=utf-8' '' 'Hello,' 'a line.' >"$W/m.eml"

run_p11smime "${PS[@]}" sign --signer rsa2048@example.org -i "$W/m.eml" -o "$W/signed.eml"
assert_exit 0 "sign"
run_p11smime encrypt --recipient "$CERTS_DIR/p256.pem" -i "$W/signed.eml" -o "$W/enc.eml"
assert_exit 0 "encrypt"

# decrypt | verify -o -
"$P11SMIME" "${PS[@]}" decrypt -i "$W/enc.eml" |
	"$P11SMIME" verify --trust "$CA_PEM" -o - >"$W/out.eml" 2>"$W/report"
assert_eq 0 "$?" "decrypt | verify -o - exits 0"
for h in 'From: rsa2048@example.org' 'To: p256@example.org' 'Subject: pipeline' \
	'Message-ID: <pipe@example.org>' 'MIME-Version: 1.0' 'Content-Type: text/plain; charset=utf-8'; do
	assert_contains "$W/out.eml" "$h"
done
assert_not_contains "$W/out.eml" "multipart/signed"
assert_not_contains "$W/out.eml" "pkcs7"
assert_contains "$W/report" "good signature"
# The original message back, line ends and all.
if cmp -s "$W/out.eml" "$W/m.eml"; then
	pass "decrypt | verify -o - gives back the message that was signed"
else
	fail "the pipeline's output differs from the signed message"
	diff "$W/m.eml" "$W/out.eml" | head -20
fi

run_p11smime verify --trust "$CA_PEM" -i "$W/signed.eml" --entity-only -o "$W/entity"
assert_exit 0 "verify --entity-only"
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\na line.\r\n' >"$W/want"
if cmp -s "$W/entity" "$W/want"; then
	pass "--entity-only writes the signed entity as signed (CRLF)"
else
	fail "--entity-only output differs"
	od -c "$W/entity" | head
fi
run_p11smime verify --trust "$CA_PEM" -i "$W/signed.eml" --entity-only
assert_exit 2 "--entity-only needs -o"

# Not signed: a sentence.
run_p11smime verify --trust "$CA_PEM" -i "$W/m.eml"
assert_exit 4 "verify of an unsigned message"
assert_contains "$ERR" "the message is not signed: its content is text/plain"
assert_not_contains "$ERR" "error:"
run_p11smime verify --trust "$CA_PEM" -i "$W/enc.eml"
assert_exit 4 "verify of an encrypted message"
assert_contains "$ERR" "decrypt it first"
finish
