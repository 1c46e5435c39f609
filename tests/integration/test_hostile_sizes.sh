#!/usr/bin/env bash
# Hostile sizes (issue 9): 10,000 trust anchors for verify --trust and
# validate --ca (OpenSSL 3.0's X509_STORE_add_cert re-sorts on every insert:
# 20-36 s before in a release build, 1-2 s now), and PKCS#12
# files whose MAC iteration count would keep OpenSSL busy for minutes.
# Timing is asserted loosely, with a timeout the old code clearly exceeds;
# bench/hostile_sizes.sh prints the figures.
. "$(dirname "$0")/lib.sh"

new_token
W=$TEST_TMP/w
mkdir -p "$W"

# 10,000 distinct CA certificates: one made by openssl, copies with other
# serial numbers (their signatures no longer hold; as anchors that does not
# matter, and nothing chains to them).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/many.key" \
	-subj "/CN=hostile sizes anchor" -set_serial 0x1000000000000000 -days 30 \
	-addext basicConstraints=critical,CA:TRUE -out "$W/one.pem" 2>/dev/null ||
	fail "openssl req"
python3 - "$W/one.pem" "$W/many.pem" 10000 <<'PY'
import base64, sys
pem = open(sys.argv[1]).read()
der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
serial = b"\x02\x08\x10\x00\x00\x00\x00\x00\x00\x00"
at = der.index(serial) + 6
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[3])):
        d = der[:at] + i.to_bytes(4, "big") + der[at + 4:]
        b = base64.b64encode(d).decode()
        f.write("-----BEGIN CERTIFICATE-----\n")
        f.write("\n".join(b[k:k + 64] for k in range(0, len(b), 64)))
        f.write("\n-----END CERTIFICATE-----\n")
PY
[ "$(grep -c 'BEGIN CERT' "$W/many.pem")" = 10000 ] || fail "10,000 certificates made"
cat "$W/many.pem" "$CA_PEM" >"$W/trust.pem"

printf 'From: rsa2048@example.org\nTo: p256@example.org\nSubject: s\n\nhello\n' >"$W/m.eml"
run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$W/m.eml" \
	-o "$W/signed.eml"
assert_exit 0 "sign"

start=$SECONDS
P11S_TIMEOUT=60 run_p11smime verify --trust "$W/trust.pem" -i "$W/signed.eml"
assert_exit 0 "verify --trust with 10,000 anchors (and the real CA last)"
echo "note: verify --trust 10,000 anchors took $((SECONDS - start)) s"

start=$SECONDS
P11S_TIMEOUT=60 run_p11smime validate --ca "$W/trust.pem" "$CERTS_DIR/rsa2048.pem"
assert_exit 0 "validate --ca with 10,000 anchors"
assert_contains "$OUT" "1 accepted"
echo "note: validate --ca 10,000 anchors took $((SECONDS - start)) s"

start=$SECONDS
P11S_TIMEOUT=120 run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org \
	--chain "$W/many.pem" --chain "$W/many.pem" -i "$W/m.eml" -o "$W/chain.eml"
assert_exit 0 "sign --chain with 10,000 certificates (given twice: each goes in once)"
echo "note: sign --chain 2 x 10,000 certificates took $((SECONDS - start)) s"
n=$(openssl smime -pk7out -in "$W/chain.eml" | openssl pkcs7 -print_certs | grep -c '^subject=')
assert_eq 10001 "$n" "the signature carries the signer's and the 10,000 certificates, once each"

# ------------------------------------------------- verify's memory

# A 48 MiB detached-signed message: verify spools it and the signed part
# to temporary files, so its peak RSS stays far below the message's size
# (it held about three times the message before: 150 MiB here).
{
	printf 'From: rsa2048@example.org\nTo: p256@example.org\nSubject: big\n'
	printf 'Content-Type: text/plain\n\n'
	yes 'A line of a rather long message, the same again and again and again.' |
		head -c $((48 * 1024 * 1024))
} >"$W/big.eml"
run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$W/big.eml" \
	-o "$W/big.signed"
assert_exit 0 "sign a 48 MiB message"
P11S_TIMEOUT=120 run_p11smime verify --trust "$CA_PEM" -i "$W/big.signed" --entity-only \
	-o "$W/big.out"
assert_exit 0 "verify the 48 MiB message"
peak=$(/usr/bin/time -f %M "$P11SMIME" verify --trust "$CA_PEM" -i "$W/big.signed" \
	-o "$W/big.out2" 2>&1 >/dev/null | tail -1)
echo "note: verify of 48 MiB: peak RSS $peak KiB"
if [ "$peak" -lt $((40 * 1024)) ]; then
	pass "verify's peak RSS ($peak KiB) stays under 40 MiB for a 48 MiB message"
else
	fail "verify's peak RSS is $peak KiB for a 48 MiB message"
fi
rm -f "$W/big.eml" "$W/big.signed" "$W/big.out" "$W/big.out2"

# ------------------------------------------------- PKCS#12 MAC iterations

openssl pkcs12 -export -inkey "$W/many.key" -in "$W/one.pem" -passout pass: -macalg sha256 \
	-out "$W/ok.p12" || fail "openssl pkcs12"
# set_iter SRC DST N: the same file with the MAC iteration count N (the
# MAC then no longer matches, which does not matter: the count is read first).
set_iter() {
	python3 - "$@" <<'PY'
import sys
def tlv(b, i):
    t, l = b[i], b[i + 1]; i += 2
    if l & 0x80:
        n = l & 0x7f; l = int.from_bytes(b[i:i + n], "big"); i += n
    return t, i, l
def enc(t, v):
    n = len(v)
    if n < 128:
        h = bytes([n])
    else:
        lb = n.to_bytes((n.bit_length() + 7) // 8, "big"); h = bytes([0x80 | len(lb)]) + lb
    return bytes([t]) + h + v
def children(b):
    out, i = [], 0
    while i < len(b):
        t, s, l = tlv(b, i); out.append((t, b[s:s + l])); i = s + l
    return out
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = open(src, "rb").read()
t, s, l = tlv(d, 0)
pfx = children(d[s:s + l])
parts = children(pfx[2][1])
parts[2] = (0x02, n.to_bytes((n.bit_length() + 8) // 8, "big"))
pfx[2] = (pfx[2][0], b"".join(enc(a, b) for a, b in parts))
open(dst, "wb").write(enc(t, b"".join(enc(a, b) for a, b in pfx)))
PY
}
run_p11smime validate "$W/ok.p12"
assert_exit 0 "a PKCS#12 file with 2,048 MAC iterations opens"
for n in 20000000 2147483647; do
	set_iter "$W/ok.p12" "$W/iter$n.p12" "$n"
	P11S_TIMEOUT=20 run_p11smime validate "$W/iter$n.p12"
	assert_contains "$ERR" "asks for $n MAC iterations; p11smime runs at most 10000000"
	assert_not_contains "$ERR" "needs a password"
	P11S_TIMEOUT=20 run_p11smime encrypt --recipient "$W/iter$n.p12" -i "$W/m.eml" -o "$W/enc.eml"
	assert_exit 4 "encrypt refuses a PKCS#12 recipient file with $n MAC iterations"
	assert_contains "$ERR" "MAC iterations"
	assert_file_absent "$W/enc.eml"
done
finish
