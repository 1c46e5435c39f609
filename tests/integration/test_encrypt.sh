#!/usr/bin/env bash
# p11smime encrypt: every cipher and key management decrypts with openssl
# cms (software keys of test recipients), RSA v1.5 + AES-CBC with gpgsm and
# NSS; recipients from files, token URIs, e-mail addresses (token, no login,
# and --recipient-dir); refusals write nothing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
T=$TEST_TMP

# Test recipients with software keys, issued by the test CA.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/carol.key" 2>/dev/null
SAN_EMAIL=carol@example.org ca_issue "key:$T/carol.key" "$T/carol.pem" smime-rsa --cn Carol
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/dave.key" 2>/dev/null
SAN_EMAIL=dave@example.org ca_issue "key:$T/dave.key" "$T/dave.pem" smime-ec --cn Dave

for f in carol.pem dave.pem; do
	[ -s "$T/$f" ] || fail "setup: $f was not made"
done

cat >"$T/msg.eml" <<'EOF'
From: Alice <rsa2048@example.org>
To: Carol <carol@example.org>
Cc: dave@example.org
Subject: quarterly numbers
Message-ID: <q3@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße,
the numbers are in.
EOF
canonical_entity "$T/msg.eml" "$T/entity.crlf"

# decrypts_with KEY CERT FILE LABEL: openssl cms -decrypt gives the entity back
decrypts_with() {
	if openssl cms -decrypt -binary -inkey "$1" -recip "$2" -in "$3" -out "$T/dec.out" \
		2>"$T/dec.err" && cmp -s "$T/entity.crlf" "$T/dec.out"; then
		pass "$4: openssl cms -decrypt gives the entity back"
	else
		fail "$4: openssl cms -decrypt failed or content differs"
		cat "$T/dec.err"
	fi
}

# ------------------------------------------------ every cipher, every KM
for cipher in aes-256-gcm aes-256-cbc aes-128-cbc; do
	for km in v15 oaep; do
		args=(--recipient "$T/carol.pem" --recipient "$T/dave.pem" --cipher "$cipher"
			-i "$T/msg.eml" -o "$T/enc-$cipher-$km.eml")
		[ $km = oaep ] && args+=(--oaep)
		run_p11smime encrypt "${args[@]}"
		assert_exit 0 "encrypt $cipher $km"
		f=$T/enc-$cipher-$km.eml
		decrypts_with "$T/carol.key" "$T/carol.pem" "$f" "$cipher RSA $km"
		decrypts_with "$T/dave.key" "$T/dave.pem" "$f" "$cipher ECDH"
		openssl cms -cmsout -print -in "$f" >"$T/print.txt" 2>/dev/null
		if [ $km = oaep ]; then
			assert_contains "$T/print.txt" "rsaesOaep"
			assert_matches "$T/print.txt" "OBJECT +:sha256"
		else
			assert_contains "$T/print.txt" "algorithm: rsaEncryption"
		fi
		assert_contains "$T/print.txt" "dhSinglePass-stdDH-sha256kdf-scheme"
		case $cipher in
		aes-256-gcm)
			assert_contains "$f" "smime-type=authEnveloped-data"
			assert_contains "$T/print.txt" "aes-256-gcm"
			;;
		*)
			assert_contains "$f" "smime-type=enveloped-data"
			assert_contains "$T/print.txt" "$cipher"
			;;
		esac
	done
done

f=$T/enc-aes-256-gcm-v15.eml
head -n 5 "$T/msg.eml" >"$T/want-head"
head -n 5 "$f" >"$T/got-head"
cmp -s "$T/want-head" "$T/got-head" && pass "outer headers kept, in order" ||
	fail "outer headers changed"
assert_contains "$f" 'name="smime.p7m"'
assert_contains "$f" "Content-Transfer-Encoding: base64"
assert_not_contains "$f" "charset=utf-8"
grep -q $'\r' "$f" && fail "LF input gave CRLF output" || pass "output line ends follow the input (LF)"
crlf "$T/msg.eml" "$T/msg-crlf.eml"
run_p11smime encrypt --recipient "$T/carol.pem" --recipient "$T/dave.pem" -i "$T/msg-crlf.eml" \
	-o "$T/enc-crlf.eml"
assert_exit 0 "CRLF input"
[ "$(grep -c $'\r$' "$T/enc-crlf.eml")" = "$(wc -l <"$T/enc-crlf.eml")" ] &&
	pass "CRLF input gives CRLF output" || fail "CRLF output has bare LFs"
decrypts_with "$T/carol.key" "$T/carol.pem" "$T/enc-crlf.eml" "CRLF input"

# ------------------------------------------------------- gpgsm and NSS
# To carol alone: NSS's cmsutil (3.87) rejects a message that also holds an
# ECDH KeyAgreeRecipientInfo as bad DER, before looking for its key.
make_p12 "$T/carol.key" "$T/carol.pem" "$T/carol.p12" secret
for cipher in aes-256-cbc aes-128-cbc; do
	f=$T/enc-$cipher-carol.eml
	run_p11smime encrypt --recipient "$T/carol.pem" --cipher "$cipher" --no-check-recipients \
		-i "$T/msg.eml" -o "$f"
	assert_exit 0 "encrypt $cipher to carol alone"
	smime_body=$T/$cipher.der
	openssl cms -cmsout -in "$f" -outform DER -out "$smime_body" 2>/dev/null
	if gpgsm_setup "$CA_PEM" && gpgsm_import_p12 "$T/carol.p12" secret; then
		if gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --decrypt "$smime_body" \
			<<<secret >"$T/gpgsm.out" 2>"$T/gpgsm.err" && cmp -s "$T/entity.crlf" "$T/gpgsm.out"; then
			pass "$cipher RSA v1.5: gpgsm --decrypt gives the entity back"
		else
			fail "$cipher RSA v1.5: gpgsm --decrypt"
			cat "$T/gpgsm.err"
		fi
	fi
	if nss_setup "$CA_PEM" && nss_import_p12 "$T/carol.p12" secret; then
		if cmsutil -D -d "$NSS_DB" -i "$smime_body" -o "$T/nss.out" >"$T/nss.err" 2>&1 &&
			cmp -s "$T/entity.crlf" "$T/nss.out"; then
			pass "$cipher RSA v1.5: NSS cmsutil -D gives the entity back"
		else
			fail "$cipher RSA v1.5: NSS cmsutil -D"
			cat "$T/nss.err"
		fi
	fi
done

# ---------------------------------------- recipients on the token, by e-mail
# Certificates are public objects: no PIN source, no terminal, still works.
run_p11smime --json encrypt --recipient rsa2048@example.org \
	--recipient "pkcs11:token=$TOKEN_LABEL;object=p256;type=cert" \
	--no-check-recipients -i "$T/msg.eml" -o "$T/enc-token.eml"
assert_exit 0 "recipients from the token by e-mail and by URI, without login"
assert_json "$OUT" '.recipients | length == 2'
assert_json "$OUT" '[.recipients[].source | startswith("pkcs11:")] == [true, true]'
assert_json "$OUT" '.recipients[0].emails == ["rsa2048@example.org"] and .recipients[0].key_management == "RSA PKCS#1 v1.5"'
assert_json "$OUT" '.recipients[1].key_management | startswith("ECDH")'
openssl cms -cmsout -print -in "$T/enc-token.eml" >"$T/print.txt" 2>/dev/null
serial=$(openssl x509 -in "$CERTS_DIR/rsa2048.pem" -noout -serial | sed 's/serial=//')
grep -qE "serialNumber: ($((16#$serial))|0x$serial)\$" "$T/print.txt" && pass "a RecipientInfo names rsa2048's certificate" ||
	fail "rsa2048's serial $serial not among the RecipientInfos"

# --self and --recipient-dir
mkdir "$T/contacts"
cp "$T/carol.pem" "$T/contacts/carol.crt"
cp "$T/dave.pem" "$T/contacts/dave.pem"
echo "not a certificate" >"$T/contacts/README"
run_p11smime --json encrypt --recipient-dir "$T/contacts" --recipient carol@example.org \
	--recipient dave@example.org --self "pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert" \
	-i "$T/msg.eml" -o "$T/enc-dir.eml"
assert_exit 0 "e-mail recipients from --recipient-dir, --self from the token"
assert_json "$OUT" '.recipients | length == 3'
decrypts_with "$T/carol.key" "$T/carol.pem" "$T/enc-dir.eml" "--recipient-dir"

# ------------------------------------------------------------- refusals
SAN_EMAIL=carol@example.org ca_issue "key:$T/carol.key" "$T/carol-old.pem" smime-rsa \
	--start 20200101000000Z --end 20210101000000Z
run_p11smime encrypt --recipient "$T/carol-old.pem" --recipient "$T/dave.pem" -i "$T/msg.eml" \
	-o "$T/refused1.eml"
assert_exit 1 "an expired recipient is refused"
assert_contains "$ERR" "not valid at"
assert_file_absent "$T/refused1.eml"
run_p11smime encrypt --recipient "$T/carol-old.pem" --recipient "$T/dave.pem" \
	--at 2020-06-01 --no-check-recipients -i "$T/msg.eml" -o "$T/refused1.eml"
assert_exit 1 "--at 2020: dave's certificate was not valid yet"
assert_contains "$ERR" "Dave"

printf '[ext]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\nsubjectAltName=DNS:carol.example.org\n' >"$T/nosan.ext"
ca_issue "key:$T/carol.key" "$T/carol-nosan.pem" "$T/nosan.ext"
run_p11smime encrypt --recipient "$T/carol-nosan.pem" --no-check-recipients -i "$T/msg.eml" \
	-o "$T/refused2.eml"
assert_exit 1 "a recipient failing the rules (no SAN e-mail) is refused"
assert_contains "$ERR" "san-email"
assert_file_absent "$T/refused2.eml"

printf '[ext]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectAltName=email:carol@example.org\n' >"$T/signonly.ext"
ca_issue "key:$T/carol.key" "$T/carol-sign.pem" "$T/signonly.ext"
run_p11smime encrypt --recipient "$T/carol-sign.pem" --no-check-recipients -i "$T/msg.eml" \
	-o "$T/refused3.eml"
assert_exit 1 "an RSA recipient without keyEncipherment is refused"
assert_contains "$ERR" "keyEncipherment"
assert_file_absent "$T/refused3.eml"

run_p11smime encrypt --recipient "$T/carol.pem" -i "$T/msg.eml" -o "$T/refused4.eml"
assert_exit 1 "a Cc address without a certificate is refused"
assert_contains "$ERR" "dave@example.org"
assert_not_contains "$ERR" "carol@example.org"
assert_file_absent "$T/refused4.eml"
run_p11smime encrypt --recipient "$T/carol.pem" --no-check-recipients -i "$T/msg.eml" \
	-o "$T/ok4.eml"
assert_exit 0 "--no-check-recipients lets it through"

run_p11smime encrypt --recipient nobody@example.org -i "$T/msg.eml" -o "$T/refused5.eml"
assert_exit 3 "an address with no certificate anywhere"
assert_contains "$ERR" "no certificate for nobody@example.org"
run_p11smime encrypt --recipient "$T/carol.pem" --cipher des-ede3-cbc -i "$T/msg.eml"
assert_exit 2 "3DES is not offered"
run_p11smime encrypt -i "$T/msg.eml"
assert_exit 2 "no recipient"
RUN_STDIN=$T/msg.eml run_p11smime encrypt --recipient "$T/carol.pem" --recipient "$T/dave.pem"
assert_exit 0 "stdin to stdout"
assert_contains "$OUT" "Subject: quarterly numbers"
decrypts_with "$T/dave.key" "$T/dave.pem" "$OUT" "stdout"

# ------------------------------------------------------------ streaming
# 48 MiB of body: memory must stay far below the message size.
{
	head -n 9 "$T/msg.eml"
	head -c $((36 * 1024 * 1024)) /dev/zero | base64 -w 76
} >"$T/big.eml"
/usr/bin/time -f '%M' -o "$T/rss" "$P11SMIME" encrypt --recipient "$T/carol.pem" \
	--recipient "$T/dave.pem" -i "$T/big.eml" -o "$T/big.enc" 2>"$T/big.err"
rss=$(tail -n1 "$T/rss")
if [ -s "$T/big.enc" ] && [ "$rss" -lt 40000 ]; then
	pass "48 MiB message encrypted in ${rss} KiB peak RSS"
else
	fail "big message: peak RSS ${rss} KiB (or no output)"
	cat "$T/big.err"
fi
rm -f "$T/big.eml" "$T/big.enc"

finish
