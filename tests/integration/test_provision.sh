#!/usr/bin/env bash
# The provisioned template token, checked with pkcs11-tool and openssl only
# (independent of p11smime): four key pairs generated on the token, private
# halves private/sensitive/never extractable, one S/MIME certificate per key
# with the key's CKA_ID and label.  Also the lib.sh token and CA helpers
# other tests build on.
. "$(dirname "$0")/lib.sh"

new_token

p11() { pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" "$@" 2>/dev/null; }

# One block per object from --list-objects, as "class|label|id|rest" lines.
objects() {
	p11 "$@" --list-objects | awk '
		/^[A-Z][a-z]+ (Key )?Object;/ { if (o) print o; o = $1 "|" ; next }
		/^  label:/ { sub(/^  label: +/, ""); o = o "label=" $0 "|"; next }
		/^  ID:/ { o = o "id=" $2 "|"; next }
		/^  Access:/ { sub(/^  Access: +/, ""); o = o "access=" $0 "|"; next }
		/^  Usage:/ { sub(/^  Usage: +/, ""); o = o "usage=" $0 "|"; next }
		END { if (o) print o }'
}

objects --login --pin "$PIN" >"$TEST_TMP/objs"
objects >"$TEST_TMP/objs-public"

declare -A want_type=([01]="RSA 2048" [02]="RSA 3072" [03]="EC" [04]="EC")
declare -A want_params=([03]=06082a8648ce3d030107 [04]=06052b81040022)
declare -A name=([01]=rsa2048 [02]=rsa3072 [03]=p256 [04]=p384)

assert_eq 4 "$(grep -c '^Private|' "$TEST_TMP/objs")" "private keys after login"
assert_eq 4 "$(grep -c '^Public|' "$TEST_TMP/objs")" "public keys"
assert_eq 4 "$(grep -c '^Certificate|' "$TEST_TMP/objs")" "certificates"
assert_eq 0 "$(grep -c '^Private|' "$TEST_TMP/objs-public")" "private keys visible without login (CKA_PRIVATE)"

for id in 01 02 03 04; do
	n=${name[$id]}
	priv=$(grep "^Private|label=$n|id=$id|" "$TEST_TMP/objs")
	if [ -z "$priv" ]; then
		fail "no private key $n with id $id"
		continue
	fi
	access=$(sed 's/.*access=\([^|]*\).*/\1/' <<<"$priv")
	# pkcs11-tool prints the flags that are true, comma-separated.
	if tr ',' '\n' <<<"$access" | sed 's/^ *//' | grep -qx sensitive &&
		tr ',' '\n' <<<"$access" | sed 's/^ *//' | grep -qx 'never extractable' &&
		tr ',' '\n' <<<"$access" | sed 's/^ *//' | grep -qx local &&
		! tr ',' '\n' <<<"$access" | sed 's/^ *//' | grep -qx extractable; then
		pass "$n: sensitive, never extractable, not extractable, generated on the token ($access)"
	else
		fail "$n: access flags are '$access'"
	fi
	grep -q "^Certificate|label=$n|id=$id|" "$TEST_TMP/objs" &&
		pass "$n: certificate with id $id and label $n" || fail "$n: no certificate with id $id/label $n"

	# Key type, and the certificate carries exactly the token's public key.
	rm -f "$TEST_TMP/pub.pem"
	token_pubkey "$id" "$TEST_TMP/pub.pem"
	cert=$CERTS_DIR/$n.pem
	openssl x509 -in "$cert" -noout -pubkey >"$TEST_TMP/certpub.pem"
	if cmp -s "$TEST_TMP/pub.pem" "$TEST_TMP/certpub.pem"; then
		pass "$n: certificate public key is the token key's"
	else
		fail "$n: certificate public key differs from the token key"
	fi
	p11 --read-object --type cert --id "$id" -o "$TEST_TMP/tokcert.der"
	if openssl x509 -in "$cert" -outform DER | cmp -s - "$TEST_TMP/tokcert.der"; then
		pass "$n: certificate on the token equals certs/$n.pem"
	else
		fail "$n: certificate on the token differs from certs/$n.pem"
	fi
	p11 --list-objects --type pubkey | awk -v id="$id" '
		/^[A-Z][a-z]+ (Key )?Object;/ { if (hit) print b; b = $0 "\n"; hit = 0; next }
		{ b = b $0 "\n" }
		$1 == "ID:" && $2 == id { hit = 1 }
		END { if (hit) print b }' >"$TEST_TMP/pubobj.txt"
	case $id in
	01 | 02) assert_contains "$TEST_TMP/pubobj.txt" "Public Key Object; ${want_type[$id]} bits" ;;
	*) assert_matches "$TEST_TMP/pubobj.txt" "EC_PARAMS: +${want_params[$id]}" ;;
	esac

	# The token key signs, and the certificate's key verifies: they pair.
	printf 'p11smime %s\n' "$n" >"$TEST_TMP/msg"
	# SoftHSM has CKM_ECDSA but no CKM_ECDSA_SHA256: sign the digest.
	openssl dgst -sha256 -binary "$TEST_TMP/msg" >"$TEST_TMP/digest"
	rm -f "$TEST_TMP/sig"
	case $id in
	01 | 02) p11 --login --pin "$PIN" --sign --mechanism SHA256-RSA-PKCS --id "$id" \
		-i "$TEST_TMP/msg" -o "$TEST_TMP/sig" ;;
	*) p11 --login --pin "$PIN" --sign --mechanism ECDSA --signature-format openssl --id "$id" \
		-i "$TEST_TMP/digest" -o "$TEST_TMP/sig" ;;
	esac
	if [ -s "$TEST_TMP/sig" ] && openssl pkeyutl -verify -pubin -inkey "$TEST_TMP/certpub.pem" \
		-pkeyopt digest:sha256 -in "$TEST_TMP/digest" -sigfile "$TEST_TMP/sig" >/dev/null 2>&1; then
		pass "$n: token signature verifies with the certificate"
	else
		fail "$n: token signature does not verify with the certificate"
	fi

	# S/MIME profile.
	openssl x509 -in "$cert" -noout -text >"$TEST_TMP/cert.txt"
	assert_contains "$TEST_TMP/cert.txt" "email:$n@example.org"
	assert_contains "$TEST_TMP/cert.txt" "E-mail Protection"
	case $id in
	01 | 02) assert_contains "$TEST_TMP/cert.txt" "Digital Signature, Key Encipherment" ;;
	*) assert_contains "$TEST_TMP/cert.txt" "Digital Signature, Key Agreement" ;;
	esac
	if openssl verify -CAfile "$CA_PEM" -purpose smimesign "$cert" >/dev/null 2>&1; then
		pass "$n: issued by the test CA, valid for S/MIME signing now"
	else
		fail "$n: does not verify against the test CA for smimesign"
	fi
	nb=$(date -u -d "$(openssl x509 -in "$cert" -noout -startdate | cut -d= -f2)" +%s)
	na=$(date -u -d "$(openssl x509 -in "$cert" -noout -enddate | cut -d= -f2)" +%s)
	now=$(date -u +%s)
	if [ $((now - nb)) -ge 82800 ] && [ $((na - now)) -gt $((2 * 365 * 86400)) ]; then
		pass "$n: valid from about a day ago for about three years"
	else
		fail "$n: validity $nb..$na does not start a day back and last ~3 years"
	fi
done

# env is sourceable and names this template.
(
	. "$P11S_TEMPLATE/env"
	[ "$SOFTHSM2_CONF" = "$P11S_TEMPLATE/softhsm2.conf" ] && [ -f "$P11S_PIN_FILE" ] &&
		[ -f "$P11S_SOFTHSM_MODULE" ] && [ "$P11S_TOKEN_LABEL" = p11smime-test ]
) && pass "env file is sourceable and consistent" || fail "env file is wrong"

# new_token gives an independent copy: a key added to it is not in the
# template, and the copy's conf points at the copy.
token_keygen EC:prime256v1 aa extra
assert_eq 5 "$(objects --login --pin "$PIN" | grep -c '^Private|')" "private keys on the copy after token_keygen"
assert_eq 4 "$(SOFTHSM2_CONF=$P11S_TEMPLATE/softhsm2.conf objects --login --pin "$PIN" | grep -c '^Private|')" \
	"private keys on the template (untouched)"
assert_contains "$SOFTHSM2_CONF" "$TOKEN_DIR/tokens"

# ca_issue with an explicit window (expired) for a token key, and with the
# default window for a bare public key.
token_pubkey aa "$TEST_TMP/extra.pub"
SAN_EMAIL=extra@example.org ca_issue token:aa "$TEST_TMP/expired.pem" --start 20200101000000Z --end 20210101000000Z
openssl x509 -in "$TEST_TMP/expired.pem" -noout -text -dates >"$TEST_TMP/expired.txt"
assert_contains "$TEST_TMP/expired.txt" "notAfter=Jan  1 00:00:00 2021 GMT"
assert_contains "$TEST_TMP/expired.txt" "email:extra@example.org"
assert_contains "$TEST_TMP/expired.txt" "Digital Signature, Key Agreement"
if openssl x509 -in "$TEST_TMP/expired.pem" -noout -pubkey | cmp -s - "$TEST_TMP/extra.pub"; then
	pass "ca_issue token:aa certifies the token key"
else
	fail "ca_issue token:aa certified another key"
fi
ca_issue "$TEST_TMP/extra.pub" "$TEST_TMP/future.pem" smime-ec --days 2
if openssl verify -CAfile "$CA_PEM" "$TEST_TMP/future.pem" >/dev/null 2>&1; then
	pass "ca_issue PUBKEY: verifies against the CA"
else
	fail "ca_issue PUBKEY: does not verify"
fi
token_import_cert "$TEST_TMP/expired.pem" aa extra
assert_eq 5 "$(objects | grep -c '^Certificate|')" "certificates after token_import_cert"

# Negative control: provision.sh refuses a directory it did not make.
mkdir "$TEST_TMP/foreign" && echo mine >"$TEST_TMP/foreign/keep"
if bash "$P11S_SRCDIR/softhsm-conf/provision.sh" "$TEST_TMP/foreign" >"$TEST_TMP/prov.out" 2>&1; then
	fail "provision.sh overwrote a foreign directory"
else
	assert_contains "$TEST_TMP/prov.out" "refusing"
	assert_file_present "$TEST_TMP/foreign/keep"
fi
