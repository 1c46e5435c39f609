#!/usr/bin/env bash
# The shapes mail clients' S/MIME hooks call: sign --detached-signature
# (the entity signed exactly as given), sign --opaque --outform der,
# verify --content/--signature, encrypt --outform der|pem.  Every output is
# checked by OpenSSL, gpgsm or NSS against bytes built from the ORIGINAL
# entity, not taken from p11smime.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
T=$TEST_TMP
PS=(--pin-source "file:$PIN_FILE")

# An 8-bit entity with LF ends and trailing blanks, as neomutt writes it:
# whatever p11smime would do to a whole message, here nothing may change.
printf 'Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nH\303\244llo w\303\266rld,  \nFrom the start of a line.\n-- \nAlice\n' >"$T/entity"
crlf "$T/entity" "$T/entity.crlf"

# ------------------------------------------------ sign --detached-signature
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --detached-signature \
	-i "$T/entity" -o "$T/sig.der"
assert_exit 0 "sign --detached-signature"
[ "$(head -c1 "$T/sig.der" | od -An -tx1 | tr -d ' ')" = 30 ] &&
	pass "the output is DER alone (a SEQUENCE)" || fail "the output is not DER"
openssl_verify "$T/sig.der" "$T/entity.crlf" "$CA_PEM" &&
	pass "openssl cms -verify -binary -content: good over the entity as given (LF made CRLF)" ||
	{ fail "openssl cms -verify of the detached signature"; cat "$TEST_TMP/openssl.log"; }
openssl cms -cmsout -print -inform DER -in "$T/sig.der" >"$T/print.txt" 2>/dev/null
grep -q "eContent: <ABSENT>" "$T/print.txt" && pass "the signature is detached (no eContent)" ||
	fail "the signature carries its content"
cp "$T/entity.crlf" "$T/altered"
flip_byte "$T/altered" 60
openssl_verify "$T/sig.der" "$T/altered" "$CA_PEM" &&
	fail "openssl accepts an altered entity" || pass "openssl refuses an altered entity"
if gpgsm_setup "$CA_PEM"; then
	gpgsm_verify "$T/sig.der" "$T/entity.crlf" && pass "gpgsm --verify: good" ||
		{ fail "gpgsm --verify of the detached signature"; cat "$TEST_TMP/gpgsm.log"; }
fi
if nss_setup "$CA_PEM"; then
	nss_verify "$T/sig.der" "$T/entity.crlf" && pass "NSS cmsutil: good" ||
		{ fail "NSS cmsutil -D of the detached signature"; cat "$TEST_TMP/cmsutil.log"; }
fi

# PEM, with an EC key, on standard output.
run_p11smime "${PS[@]}" sign --signer p256@example.org --detached-signature --outform pem \
	-i "$T/entity"
assert_exit 0 "sign --detached-signature --outform pem"
cp "$OUT" "$T/sig.pem"
assert_matches "$T/sig.pem" '^-----BEGIN PKCS7-----$'
openssl cms -verify -binary -inform PEM -in "$T/sig.pem" -content "$T/entity.crlf" \
	-CAfile "$CA_PEM" -out /dev/null 2>"$T/ossl.err" &&
	pass "openssl reads the PEM signature: good" || { fail "PEM signature"; cat "$T/ossl.err"; }

# ------------------------------------------------------ sign --opaque --outform der
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --opaque --outform der \
	-i "$T/entity" -o "$T/opaque.der"
assert_exit 0 "sign --opaque --outform der"
if openssl cms -verify -binary -inform DER -in "$T/opaque.der" -CAfile "$CA_PEM" \
	-out "$T/opaque.out" 2>"$T/ossl.err" && cmp -s "$T/opaque.out" "$T/entity.crlf"; then
	pass "opaque DER: good, and the content is the entity byte for byte (LF made CRLF)"
else
	fail "opaque DER"
	cat "$T/ossl.err"
fi

# -------------------------------------------------- verify --content --signature
run_p11smime verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/sig.der"
assert_exit 0 "verify --content --signature (DER recognised)"
assert_contains "$OUT" "good signature by rsa2048@example.org"
assert_contains "$OUT" "format:      detached"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity.crlf" --signature "$T/sig.pem"
assert_exit 0 "verify: PEM recognised, CRLF content"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/sig.pem" --inform pem
assert_exit 0 "verify --inform pem"
run_p11smime --json verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/sig.der" \
	--inform der
assert_exit 0 "verify --inform der --json"
assert_json "$OUT" '.signers[0].verdict == "good"' "JSON report as for verify"
run_p11smime verify --trust "$CA_PEM" --signature "$T/opaque.der" -o "$T/opaque-content"
assert_exit 0 "verify --signature alone: an opaque signature"
assert_contains "$OUT" "format:      opaque"
cmp -s "$T/opaque-content" "$T/entity.crlf" && pass "-o gives the entity inside, byte for byte" ||
	fail "the opaque content differs"
run_p11smime verify --trust "$CA_PEM" --signature "$T/opaque.der" -i "$T/opaque.der"
assert_exit 2 "--signature with -i"
run_p11smime verify --trust "$CA_PEM" --content "$T/altered" --signature "$T/sig.der"
assert_exit 1 "an altered content is not good"
assert_contains "$OUT" "BAD SIGNATURE"
run_p11smime verify --trust "$CERTS_DIR/p384.pem" --content "$T/entity" --signature "$T/sig.der"
assert_exit 1 "a signer outside --trust is not good"
assert_matches -i "$OUT" "untrusted|not trusted"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/sig.pem" --inform der
assert_exit 4 "PEM read as --inform der: bad input"
assert_contains "$ERR" "DER"
printf 'not a signature\n' >"$T/junk"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/junk"
assert_exit 4 "a file that is no signature: bad input"
assert_contains "$ERR" "not a CMS"

# ------------------------------------------------------ encrypt --outform der|pem
# The mock pair is a software key: OpenSSL, gpgsm and NSS can decrypt with it.
MK=$TOKEN_DIR/mock/key.pem
MC=$TOKEN_DIR/mock/cert.pem
for c in aes-256-gcm aes-256-cbc; do
	run_p11smime encrypt --recipient "$MC" --cipher "$c" --outform der -i "$T/entity" \
		-o "$T/enc-$c.der"
	assert_exit 0 "encrypt --outform der ($c)"
	if openssl cms -decrypt -inform DER -in "$T/enc-$c.der" -inkey "$MK" -out "$T/dec-$c" \
		2>"$T/ossl.err" && cmp -s "$T/dec-$c" "$T/entity.crlf"; then
		pass "openssl cms -decrypt -inform der ($c): the entity back"
	else
		fail "openssl cms -decrypt -inform der ($c)"
		cat "$T/ossl.err"
	fi
done
run_p11smime encrypt --recipient "$MC" --outform pem -i "$T/entity" -o "$T/enc.pem"
assert_exit 0 "encrypt --outform pem"
assert_matches "$T/enc.pem" '^-----BEGIN PKCS7-----$'
assert_not_contains "$T/enc.pem" "Content-Type"
openssl cms -decrypt -inform PEM -in "$T/enc.pem" -inkey "$MK" -out "$T/dec-pem" 2>"$T/ossl.err" &&
	cmp -s "$T/dec-pem" "$T/entity.crlf" && pass "openssl decrypts the PEM form" ||
	fail "openssl cms -decrypt -inform pem"
run_p11smime encrypt --recipient "$MC" --outform smime -i "$T/entity" -o "$T/enc.eml"
assert_exit 0 "encrypt --outform smime"
assert_contains "$T/enc.eml" "Content-Type: application/pkcs7-mime"
# The key on the token, through p11smime decrypt --inform der (neomutt's decrypt hook).
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" --outform der -i "$T/entity" \
	-o "$T/enc-token.der"
assert_exit 0 "encrypt --outform der to a token certificate"
run_p11smime "${PS[@]}" decrypt --inform der -i "$T/enc-token.der" -o "$T/dec-token"
assert_exit 0 "decrypt --inform der"
assert_contains "$T/dec-token" "wörld"
make_p12 "$MK" "$MC" "$T/mock.p12" secret
if gpgsm_setup "$CA_PEM" && gpgsm_import_p12 "$T/mock.p12" secret; then
	run_p11smime encrypt --recipient "$MC" --cipher aes-256-cbc --outform der -i "$T/entity" \
		-o "$T/enc-g.der"
	if gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --decrypt "$T/enc-g.der" \
		<<<secret >"$T/gpgsm.out" 2>"$T/gpgsm.err" && cmp -s "$T/gpgsm.out" "$T/entity.crlf"; then
		pass "gpgsm --decrypt reads encrypt --outform der (aes-256-cbc)"
	else
		fail "gpgsm --decrypt of encrypt --outform der"
		cat "$T/gpgsm.err"
	fi
fi

# ------------------------------------------------------------------ usage
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --detached-signature --opaque -i "$T/entity"
assert_exit 2 "--detached-signature with --opaque"
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --outform der -i "$T/entity"
assert_exit 2 "--outform der without --detached-signature or --opaque"
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --detached-signature --outform smime \
	-i "$T/entity"
assert_exit 2 "--detached-signature --outform smime"
run_p11smime "${PS[@]}" sign --signer rsa2048@example.org --detached-signature --outform xml \
	-i "$T/entity"
assert_exit 2 "--outform xml"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity"
assert_exit 2 "--content without --signature"
run_p11smime verify --trust "$CA_PEM" --content "$T/entity" --signature "$T/sig.der" -i "$T/entity"
assert_exit 2 "--content with -i"
run_p11smime encrypt --recipient "$MC" --outform xml -i "$T/entity"
assert_exit 2 "encrypt --outform xml"
# A refused signer: nothing written.
run_p11smime "${PS[@]}" sign --signer nobody@example.org --detached-signature -i "$T/entity" \
	-o "$T/none.der"
assert_exit 3 "no certificate for the signer"
assert_file_absent "$T/none.der"
finish
