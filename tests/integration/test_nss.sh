#!/usr/bin/env bash
# NSS's software token (libsoftokn3.so) on a database made by certutil and
# pk12util, registered with p11-kit the way a user would: a module file in
# ~/.config/pkcs11/modules/ whose x-init-reserved line carries the
# softoken's C_Initialize parameters.  A private HOME, never the system's
# configuration; p11-kit reads no user configuration for root, so the tool
# then runs as nobody.  list, validate (software keys are extractable:
# key-hardware-bound fails), sign, verify, encrypt and decrypt.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
SOFTOKN=/usr/lib/x86_64-linux-gnu/libsoftokn3.so
[ -f "$SOFTOKN" ] || { fail "$SOFTOKN is missing (package libnss3)"; finish; }
command -v certutil >/dev/null && command -v pk12util >/dev/null ||
	{ fail "certutil/pk12util are missing (package libnss3-tools)"; finish; }

# ------------------------------------------------- the NSS database
DB=$T/nssdb
mkdir -p "$DB"
echo "nss-pin-1" >"$T/nss.pin"
certutil -N -d "sql:$DB" -f "$T/nss.pin" >/dev/null 2>&1 || fail "certutil -N"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.key" 2>/dev/null
SAN_EMAIL=nss-rsa@example.org ca_issue "key:$T/rsa.key" "$T/rsa.pem" smime-rsa --cn "NSS RSA" >/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ec.key" 2>/dev/null
SAN_EMAIL=nss-ec@example.org ca_issue "key:$T/ec.key" "$T/ec.pem" smime-ec --cn "NSS EC" >/dev/null
for k in rsa ec; do
	openssl pkcs12 -export -in "$T/$k.pem" -inkey "$T/$k.key" -name "nss-$k" \
		-out "$T/$k.p12" -passout pass:p12pass
	pk12util -i "$T/$k.p12" -d "sql:$DB" -k "$T/nss.pin" -W p12pass >/dev/null 2>&1 ||
		fail "pk12util -i $k.p12"
done
certutil -L -d "sql:$DB" | grep -q nss-rsa && pass "NSS database made with certutil and pk12util" ||
	fail "the NSS database has no nss-rsa"

# ------------------------------------- p11-kit: the softoken as a module
mkdir -p "$T/home/.config/pkcs11/modules"
cat >"$T/home/.config/pkcs11/modules/nss-softoken.module" <<EOF
module: $SOFTOKN
x-init-reserved: configdir='sql:$DB' certPrefix='' keyPrefix='' secmod='secmod.db' flags=readOnly
EOF
# The other modules the system registers stay out of this run: tpm2-pkcs11
# without a TPM only complains, and SoftHSM (its token is new_token's)
# would be one more token for --signer to search.
for m in tpm2_pkcs11 softhsm2 opensc-pkcs11; do
	printf 'disable-in: p11smime\n' >"$T/home/.config/pkcs11/modules/$m.module"
done
REAL_P11SMIME=$P11SMIME
as_user() { # p11smime ARGS through p11-kit's proxy, with the private HOME
	if [ "$(id -u)" = 0 ]; then
		P11SMIME=/usr/bin/env run_p11smime HOME="$T/home" \
			setpriv --reuid=65534 --regid=65534 --clear-groups "$REAL_P11SMIME" "$@"
	else
		P11SMIME=/usr/bin/env run_p11smime HOME="$T/home" "$REAL_P11SMIME" "$@"
	fi
}
chmod -R a+rwX "$T"
unset P11SMIME_MODULE
TOK='pkcs11:token=NSS%20Certificate%20DB'
PINOPT=(--pin-source "file:$T/nss.pin")

as_user tokens
assert_exit 0 "tokens through p11-kit"
assert_contains "$OUT" "Token 'NSS Certificate DB'"
assert_contains "$OUT" "manufacturer: Mozilla Foundation"
assert_not_contains "$ERR" "tcti"

as_user list "$TOK;type=cert"
assert_exit 0 "list the NSS certificates without login"
assert_contains "$OUT" "Certificate 'nss-rsa'"
assert_contains "$OUT" "Certificate 'nss-ec'"

as_user "${PINOPT[@]}" --json list --login "$TOK"
assert_exit 0 "list --login on NSS"
assert_json "$OUT" '[.objects[] | select(.class == "private-key")] | length == 2' "two private keys after login"
assert_json "$OUT" '[.objects[] | select(.class == "private-key") | .extractable] | all(. == true)' \
	"NSS software keys are extractable"

as_user "${PINOPT[@]}" --json validate "$TOK;object=nss-rsa;type=cert"
assert_json "$OUT" '.certificates[0].key.checks[] | select(.check == "key-hardware-bound") | .result == "fail"' \
	"validate: key-hardware-bound fails on NSS's software key"
as_user "${PINOPT[@]}" validate "$TOK;object=nss-rsa;type=cert"
assert_matches "$OUT" 'FAIL +key-hardware-bound +.*EXTRACTABLE'

# ------------------------------------------------------------- sign
printf 'From: nss-rsa@example.org\nTo: bob@example.org\nSubject: nss\nContent-Type: text/plain\n\nSigned by NSS\n' >"$T/m.eml"
sed 's/^From: .*/From: nss-ec@example.org/' "$T/m.eml" >"$T/m-ec.eml"
chmod a+r "$T"/*.eml
for s in "rsa:" "rsa:--pss" "ec:"; do
	k=${s%%:*}
	opt=${s#*:}
	in=$T/m.eml
	[ "$k" = ec ] && in=$T/m-ec.eml
	# shellcheck disable=SC2086
	as_user "${PINOPT[@]}" sign --signer "nss-$k@example.org" $opt -i "$in" -o "$T/signed-$k$opt.eml"
	assert_exit 0 "sign with the NSS $k key $opt"
	if openssl cms -verify -in "$T/signed-$k$opt.eml" -CAfile "$CA_PEM" -out /dev/null 2>"$T/verify.err"; then
		pass "openssl verifies the NSS $k signature $opt"
	else
		fail "openssl cms -verify (nss $k $opt): $(cat "$T/verify.err")"
	fi
done

# ------------------------------------------------ encrypt / decrypt
printf 'From: alice@example.org\nTo: nss-rsa@example.org\nSubject: s\nContent-Type: text/plain\n\nFor NSS\n' >"$T/p.eml"
for o in "" --oaep; do
	run_p11smime encrypt $o --recipient "$T/rsa.pem" -i "$T/p.eml" -o "$T/enc$o.eml"
	assert_exit 0 "encrypt $o to the NSS certificate"
	chmod a+r "$T/enc$o.eml"
	as_user "${PINOPT[@]}" decrypt -i "$T/enc$o.eml" -o "$T/dec$o.eml"
	assert_exit 0 "decrypt $o on NSS"
	assert_contains "$T/dec$o.eml" "For NSS"
done
sed 's/^To: .*/To: nss-ec@example.org/' "$T/p.eml" >"$T/pe.eml"
run_p11smime encrypt --recipient "$T/ec.pem" -i "$T/pe.eml" -o "$T/enc-ec.eml"
chmod a+r "$T/enc-ec.eml"
as_user "${PINOPT[@]}" decrypt -i "$T/enc-ec.eml" -o "$T/dec-ec.eml"
assert_exit 0 "decrypt on NSS with ECDH"
assert_contains "$T/dec-ec.eml" "For NSS"

# ------------------------ --module alone cannot start the softoken
run_p11smime --module "$SOFTOKN" tokens
assert_exit 3 "--module libsoftokn3.so without its parameters: exit 3"
assert_contains "$ERR" "C_Initialize"

finish
