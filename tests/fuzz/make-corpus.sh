#!/usr/bin/env bash
# Make the fuzz fixtures and seed corpora: tests/fuzz/keys/ (a CA, an RSA and
# an EC recipient; made once, kept in git so the seeds stay valid) and
# tests/fuzz/corpus/NAME/ for each fuzz_NAME target.  Everything here is made
# by openssl from scratch; no third-party sample is used.  Rerun after
# changing it; the seeds are committed.
#
#   bash tests/fuzz/make-corpus.sh [--new-keys]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keys=$here/keys
corpus=$here/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${1:-}" = --new-keys ] || [ ! -s "$keys/ca.pem" ]; then
	rm -rf "$keys"
	mkdir -p "$keys"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$keys/ca.key" -out "$keys/ca.pem" -subj "/O=p11smime fuzz/CN=Fuzz CA" \
		-not_before 20260101000000Z -not_after 20360101000000Z \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$keys/ca.key" -out "$keys/ca.pem" -subj "/O=p11smime fuzz/CN=Fuzz CA" \
			-days 3650 -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	issue() { # NAME KEYALG KU
		openssl genpkey -algorithm "$2" ${4:+-pkeyopt "$4"} -out "$keys/$1.key" 2>/dev/null
		openssl req -new -key "$keys/$1.key" -subj "/CN=fuzz $1/emailAddress=$1@example.org" \
			-out "$tmp/$1.csr" 2>/dev/null
		cat >"$tmp/$1.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,$3
extendedKeyUsage=emailProtection
subjectAltName=email:$1@example.org
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
		openssl x509 -req -in "$tmp/$1.csr" -CA "$keys/ca.pem" -CAkey "$keys/ca.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 3650 -extfile "$tmp/$1.ext" \
			-out "$keys/$1.pem" 2>/dev/null
	}
	issue rsa RSA "digitalSignature,keyEncipherment" rsa_keygen_bits:2048
	issue ec EC "digitalSignature,keyAgreement" ec_paramgen_curve:P-256
fi

rm -rf "$corpus"
for t in mime canon cms_stream decrypt certs verify uri pkcs11; do
	mkdir -p "$corpus/$t"
done
# seed NAME FILE [MODE-BYTE-HEX]: copy FILE into corpus/NAME, after a mode byte
seed() {
	local out
	out=$corpus/$1/$(basename "$2")${3:+-m$3}
	if [ -n "${3:-}" ]; then
		{ printf "\\x$3"; cat "$2"; } >"$out"
	else
		cp "$2" "$out"
	fi
}

# ------------------------------------------------------------- messages
m=$tmp/msg
mkdir -p "$m"
printf 'From: "Doe, J." <j@Example.org>, (c (nested)) b@x.y\nTo: team: a@b.c, "q q"@d.e;, <@r.o:e@f.g>\nCc: undisclosed-recipients:;\nSubject: =?utf-8?q?x?=\nContent-Type: text/plain; charset="us-ascii"; format=flowed\n\nhello\n' >"$m/addresses.eml"
printf 'Content-Type: application/x-stuff;\n title*0*=us-ascii'"'"'en'"'"'This%%20is;\n title*1*=%%20fun; name="a\\"b"\nContent-Transfer-Encoding: (c) Base64\r\n\r\nQUJD\r\n' >"$m/rfc2231.eml"
printf 'Content-Type: multipart/mixed; boundary="b1"\nMIME-Version: 1.0\n\npreamble\n--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9 line\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n\x00\x01\x02\r\x03\n--b1\nContent-Type: message/rfc822\n\nSubject: inner\nContent-Type: multipart/alternative; boundary=b2\n\n--b2\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n<p>=C3=A9 soft=\nbreak</p>\n--b2--\n--b1--\nepilogue\n' >"$m/multipart.eml"
printf 'Content-Type: text/plain\n\n%s\nFrom the start\n.\n trailing \t\n\r\nlone\rcr\n' "$(head -c 1200 /dev/zero | tr '\0' x)" >"$m/longline.eml"
printf 'Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n%s\n' "$(head -c 600 /dev/zero | tr '\0' '\1' | base64 -w 76)" >"$m/base64.eml"
for f in "$m"/*.eml; do
	seed mime "$f"
	seed canon "$f" 00
	seed canon "$f" 05
	seed canon "$f" 0d
	# sign's chain from a file, the digest on a helper (bits 16, 64, 4; 8: from the first byte; 32: CRLF)
	seed canon "$f" 54
	seed canon "$f" 5c
	seed canon "$f" 74
done

# ------------------------------------------------------------ encrypted
printf 'Content-Type: text/plain; charset=us-ascii\n\nSecret line one.\nSecret line two.\n' >"$tmp/plain.txt"
head -c 3000 /dev/urandom | base64 >"$tmp/bigger.txt"
hdr='From: a@example.org\nTo: rsa@example.org, ec@example.org\nSubject: s\n'
enc() { # NAME CIPHER [RSA-KEYOPT] [ARGS...]: to both recipients; S/MIME, DER, PEM
	local name=$1 cipher=$2 ko=${3:-} r
	shift 3 || shift $#
	r=(-recip "$keys/rsa.pem")
	[ -n "$ko" ] && r+=(-keyopt "$ko")
	r+=(-recip "$keys/ec.pem")
	openssl cms -encrypt -"$cipher" -in "$tmp/plain.txt" -out "$tmp/$name.smime" "$@" "${r[@]}"
	{ printf "$hdr"; cat "$tmp/$name.smime"; } >"$tmp/$name.eml"
	openssl cms -encrypt -"$cipher" -in "$tmp/plain.txt" -outform DER -out "$tmp/$name.der" \
		"$@" "${r[@]}"
	openssl cms -encrypt -"$cipher" -in "$tmp/bigger.txt" -outform PEM -out "$tmp/$name.pem" \
		"$@" "${r[@]}"
	# decrypt: mode bits 0-1 form (0 S/MIME, 1 DER, 2 PEM), bit 4 the EC key
	seed decrypt "$tmp/$name.eml" 00
	seed decrypt "$tmp/$name.eml" 18
	seed decrypt "$tmp/$name.der" 01
	seed decrypt "$tmp/$name.der" 11
	seed decrypt "$tmp/$name.pem" 02
	# cms_stream: mode bits 0-1 encoding (0 DER, 1 base64, 2 PEM), bit 2 replay
	seed cms_stream "$tmp/$name.der" 00
	seed cms_stream "$tmp/$name.der" 04
	sed -n '/^$/,$p' "$tmp/$name.smime" | tail -n +2 >"$tmp/$name.b64"
	seed cms_stream "$tmp/$name.b64" 01
	seed cms_stream "$tmp/$name.pem" 02
}
enc cbc aes-256-cbc
enc cbc128 aes-128-cbc rsa_padding_mode:oaep
enc gcm aes-256-gcm ""
enc gcm-stream aes-128-gcm "" -stream
enc cbc-stream aes-192-cbc "" -stream

# ------------------------------------------------------------ signed
sign() { # NAME [ARGS...]
	local name=$1
	shift
	openssl cms -sign -signer "$keys/ec.pem" -inkey "$keys/ec.key" -certfile "$keys/ca.pem" \
		-in "$tmp/plain.txt" -out "$tmp/$name.smime" "$@"
	{ printf 'From: Fuzz <ec@example.org>\nTo: b@example.org\nSubject: signed\n'; cat "$tmp/$name.smime"; } \
		>"$corpus/verify/$name.eml"
}
sign detached
sign opaque -nodetach
sign noattr -noattr -md sha384
openssl cms -sign -signer "$keys/rsa.pem" -inkey "$keys/rsa.key" -in "$tmp/plain.txt" \
	-out "$corpus/verify/rsa-pss.eml" -keyopt rsa_padding_mode:pss
printf 'From: a)b@example.org\n\nx\n' >"$corpus/verify/stray-paren.eml"

# ------------------------------------------------------- certificate files
c=$tmp/certs
mkdir -p "$c"
cat "$keys/rsa.pem" "$keys/ec.pem" "$keys/ca.pem" >"$c/bundle.pem"
openssl x509 -in "$keys/ec.pem" -outform DER -out "$c/ec.der"
openssl crl2pkcs7 -nocrl -certfile "$c/bundle.pem" -outform DER -out "$c/chain.p7b"
openssl crl2pkcs7 -nocrl -certfile "$c/bundle.pem" -out "$c/chain.p7c.pem"
openssl pkcs12 -export -inkey "$keys/ec.key" -in "$keys/ec.pem" -certfile "$keys/ca.pem" \
	-passout pass: -out "$c/empty.p12" 2>/dev/null
openssl pkcs12 -export -inkey "$keys/rsa.key" -in "$keys/rsa.pem" -passout pass:fuzz \
	-out "$c/fuzz.p12" 2>/dev/null
{ cat "$keys/rsa.pem"; printf -- '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n'; } >"$c/damaged.pem"
# certs: bit 0 the password "fuzz", bit 1 key facts from the public key
for f in "$c"/*; do
	seed certs "$f" 00
	seed certs "$f" 03
done

# ------------------------------------------------------------ typed text
i=0
while IFS= read -r line; do
	i=$((i + 1))
	printf '%s' "$line" >"$corpus/uri/$i"
done <<'EOF_URI'
pkcs11:token=p11smime-test;object=alice;type=private
pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1234;token=x;id=%01%02;type=cert?pin-value=1234
pkcs11:library-manufacturer=OpenSC;slot-id=5?pin-source=file:/dev/null&module-name=softhsm2
pkcs11:id=%zz;pin-value=SECRET
file:/run/pin
fd:3
env:P11S_PIN
2026-11-28T00:00:00Z
2026-11-28T01:00:00.123+01:00
2026-02-29
EOF_URI

# --------------------------------------------------------- PKCS#11 objects
# Format: see p11i_mock_fuzz_load() in tests/mock/mock_pkcs11.c.
python3 - "$corpus/pkcs11" "$keys" <<'EOF_PY'
import subprocess, sys
out, keys = sys.argv[1], sys.argv[2]
def der(path):
    return subprocess.run(["openssl", "x509", "-in", path, "-outform", "DER"],
                          check=True, capture_output=True).stdout
def attr(t, v, lie=0):
    return bytes([t, lie, len(v) >> 8, len(v) & 0xff]) + v
def ul(n):
    return n.to_bytes(8, "little")
def obj(priv, attrs):
    return bytes([priv, len(attrs)]) + b"".join(attrs)
CLASS, TOKEN, PRIVATE, LABEL, ID, VALUE, KEY_TYPE, CERT_TYPE = range(8)
SUBJECT, ISSUER, SERIAL, MODULUS, MODULUS_BITS, EXP, EC_PARAMS, EC_POINT = range(8, 16)
cert = der(keys + "/rsa.pem")
ec = der(keys + "/ec.pem")
t = b"\x01"
seeds = {
    "cert-and-key": obj(0, [attr(CLASS, ul(1)), attr(TOKEN, t), attr(LABEL, b"fuzz"),
                            attr(ID, b"\x01"), attr(VALUE, cert), attr(CERT_TYPE, ul(0))])
                    + obj(0, [attr(CLASS, ul(3)), attr(KEY_TYPE, ul(0)), attr(ID, b"\x01"),
                              attr(LABEL, b"fuzz"), attr(MODULUS_BITS, ul(2048)),
                              attr(MODULUS, b"\xc0" * 256), attr(EXP, b"\x01\x00\x01")])
                    + obj(0, [attr(CLASS, ul(2)), attr(KEY_TYPE, ul(0)), attr(ID, b"\x01"),
                              attr(MODULUS, b"\xc0" * 256), attr(EXP, b"\x01\x00\x01")]),
    "ec-cert": obj(0, [attr(CLASS, ul(1)), attr(ID, b"\x02\x03"), attr(VALUE, ec),
                       attr(LABEL, b"ec"), attr(CERT_TYPE, ul(0))])
               + obj(0, [attr(CLASS, ul(3)), attr(KEY_TYPE, ul(3)), attr(ID, b"\x02\x03"),
                         attr(EC_PARAMS, bytes.fromhex("06082a8648ce3d030107"))]),
    "lies": obj(0, [attr(CLASS, ul(1)), attr(LABEL, b"huge", 1), attr(ID, b"\x01", 2),
                    attr(VALUE, cert, 2), attr(SUBJECT, b"x", 3)])
            + obj(0, [attr(CLASS, ul(3)), attr(LABEL, b"short", 3), attr(ID, b"\x01", 4),
                      attr(KEY_TYPE, ul(0), 5)]),
    "raw-type": obj(0, [attr(CLASS, ul(1)), bytes([0xff, 0x80, 0, 0, 1, 0, 0, 2]) + b"ab"]),
}
for name, data in seeds.items():
    with open(f"{out}/{name}", "wb") as f:
        f.write(data)
EOF_PY
# fuzz_milter: NUL-separated field names and values, an empty name, the body.
mkdir -p "$corpus/milter"
printf 'From\0A <a@example.org>\0To\0b@example.net\0Subject\0hi\nthere\0Content-Type\0text/plain;\n\tcharset=us-ascii\0\0Hello\r\n.\r\nend\r\n' >"$corpus/milter/plain"
printf 'From\0a@example.org, b@example.org\0Content-Type\0multipart/signed; protocol="application/pkcs7-signature"\0\0x' >"$corpus/milter/signed"
printf 'From\0a@example.org\0MIME-Version\0001.0\0Content-Type\0multipart/mixed; boundary=b\0\0--b\r\nContent-Type: text/plain\r\n\r\n\xe9t\xe9\r\n--b--\r\n' >"$corpus/milter/multi"
printf '# map\na@example.org pkcs11:id=%%01\n@example.net pkcs11:token=x;object=y\r\n\n' >"$corpus/milter/map"
printf 'Bad Name\0v\0From\0x\nBcc: injected\0\0' >"$corpus/milter/bad"

echo "make-corpus: $(find "$corpus" -type f | wc -l) seeds in $corpus"
