#!/usr/bin/env bash
# p11smime sign on a SoftHSM token: every signed message is verified against
# the bytes the test expects to be signed (built from the ORIGINAL message,
# not taken from p11smime's output) by OpenSSL, gpgsm and NSS, and a changed
# byte makes all three fail.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
gpgsm_setup "$CA_PEM"
nss_setup "$CA_PEM"
M=$TEST_TMP/msgs
mkdir -p "$M"

# ---------------------------------------------------------------- messages

cat >"$M/plain.eml" <<'EOF'
Received: from mail.example.org by mx.example.net; Sat, 28 Nov 2026 09:00:00 +0000
From: "RSA, Key" <rsa2048@example.org>
To: Bob <bob@example.net>
Cc: carol@example.net
Subject: Quarterly figures,
 folded onto a second line
Date: Sat, 28 Nov 2026 09:00:00 +0000
Message-ID: <1234@example.org>
References: <1000@example.org>
 <1001@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
X-Mailer: test

Hello Bob,

From the figures: all is well.
. a line with a dot
-- 
Alice
EOF

cat >"$M/alt.eml" <<'EOF'
From: rsa2048@example.org
To: bob@example.net
Subject: alternative
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_alt_1"

This is a multi-part message in MIME format.
--=_alt_1
Content-Type: text/plain; charset=us-ascii

Plain version.
--=_alt_1
Content-Type: text/html; charset=us-ascii

<html><body><p>HTML <b>version</b>.</p></body></html>
--=_alt_1--
EOF

head -c 3000 /dev/urandom >"$TEST_TMP/blob.bin"
{
	cat <<'EOF'
From: rsa2048@example.org
To: bob@example.net
Subject: with an attachment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain; charset=us-ascii

See the attachment.
--mix
Content-Type: application/octet-stream; name="blob.bin"
Content-Disposition: attachment; filename="blob.bin"
Content-Transfer-Encoding: base64

EOF
	base64 "$TEST_TMP/blob.bin"
	echo "--mix--"
} >"$M/attach.eml"

printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x82\xac\n' >"$M/utf8.eml"
# The entity an 8-bit body must become: quoted-printable, written out by hand.
printf 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln =E2=82=AC\r\n' >"$M/utf8.expected"

crlf "$M/plain.eml" "$M/crlf.eml"
printf 'Content-Type: text/plain; charset=us-ascii\n\nA bare entity.\n' >"$M/entity.mime"
printf 'From: rsa2048@example.org\nTo: bob@example.net\nSubject: empty\n\n' >"$M/empty.eml"

for m in plain alt attach crlf empty; do
	canonical_entity "$M/$m.eml" "$M/$m.expected"
done
canonical_entity "$M/entity.mime" "$M/entity.expected"
# The expected entity of the empty body is a blank line, nothing else.
assert_eq 2 "$(wc -c <"$M/empty.expected")" "empty body: the entity is just a blank line"

# ---------------------------------------------------------------- helpers

# The fields of a header block that are not Content-* or MIME-Version, raw.
outer_headers() {
	perl -e 'local $/; my $m = <STDIN>; $m =~ /\A(.*?\r?\n)\r?\n/s or exit 0;
		my @f; for my $l (split /(?<=\n)/, $1) { if ($l =~ /^[ \t]/) { $f[-1] .= $l } else { push @f, $l } }
		print grep { !/^(Content-|MIME-Version)/i } @f;' <"$1"
}

# The output's header fields before "MIME-Version: 1.0", raw.
headers_before_mime_version() {
	perl -e 'local $/; my $m = <STDIN>; $m =~ /\A(.*?)^MIME-Version: 1\.0\r?$/ms and print $1;' <"$1"
}

# sign_check NAME MSG EXPECTED SIGNER MICALG [sign options]: sign MSG and verify it three ways.
sign_check() {
	local name=$1 msg=$2 expected=$3 signer=$4 micalg=$5
	shift 5
	local out=$TEST_TMP/$name.signed sig=$TEST_TMP/$name.p7s opaque=0
	case " $* " in *" --opaque "*) opaque=1 ;; esac
	RUN_STDIN= run_p11smime --pin-source "file:$PIN_FILE" sign --signer "$signer" -i "$msg" -o "$out" "$@"
	assert_exit 0 "$name: signed"
	[ "$RC" = 0 ] || return 0

	if cmp -s <(outer_headers "$msg") <(headers_before_mime_version "$out"); then
		pass "$name: outer headers kept, in order, byte for byte"
	else
		fail "$name: outer headers changed"
		diff <(outer_headers "$msg") <(headers_before_mime_version "$out") | head -n 10
	fi
	if grep -q $'\r$' "$msg"; then
		[ "$(grep -vc $'\r$' "$out")" = 0 ] && pass "$name: CRLF in, CRLF out" ||
			fail "$name: a line of the output lacks its CR"
	else
		grep -q $'\r' "$out" && fail "$name: LF in, but the output has CRs" ||
			pass "$name: LF in, LF out"
	fi
	if [ $opaque = 1 ]; then
		assert_matches "$out" '^Content-Type: application/pkcs7-mime; smime-type=signed-data;'
	else
		assert_matches "$out" "^Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=$micalg;"
	fi

	smime_signature "$out" "$sig" || { fail "$name: no CMS in the output"; return 0; }
	if [ $opaque = 1 ]; then
		openssl_verify "$sig" - "$CA_PEM" && cmp -s "$TEST_TMP/openssl.out" "$expected" &&
			pass "$name: openssl cms -verify: good, content = original" ||
			{ fail "$name: openssl cms -verify"; cat "$TEST_TMP/openssl.log"; }
		gpgsm_verify "$sig" && pass "$name: gpgsm --verify: good" ||
			{ fail "$name: gpgsm --verify"; tail -n 5 "$TEST_TMP/gpgsm.log"; }
		nss_verify "$sig" && cmp -s "$TEST_TMP/cmsutil.out" "$expected" &&
			pass "$name: cmsutil -D: good, content = original" ||
			{ fail "$name: cmsutil -D"; tail -n 5 "$TEST_TMP/cmsutil.log"; }
	else
		openssl_verify "$sig" "$expected" "$CA_PEM" && pass "$name: openssl cms -verify: good" ||
			{ fail "$name: openssl cms -verify"; cat "$TEST_TMP/openssl.log"; }
		gpgsm_verify "$sig" "$expected" && pass "$name: gpgsm --verify: good" ||
			{ fail "$name: gpgsm --verify"; tail -n 5 "$TEST_TMP/gpgsm.log"; }
		nss_verify "$sig" "$expected" && pass "$name: cmsutil -D: good" ||
			{ fail "$name: cmsutil -D"; tail -n 5 "$TEST_TMP/cmsutil.log"; }
	fi
	# The message as a whole, through OpenSSL's S/MIME parser.
	openssl cms -verify -in "$out" -CAfile "$CA_PEM" -out /dev/null >/dev/null 2>&1 &&
		pass "$name: the whole message verifies" || fail "$name: the whole message does not verify"
}

# negative NAME EXPECTED: a byte changed in the signed content fails all three.
negative() {
	local name=$1 expected=$2 sig=$TEST_TMP/$1.p7s bad=$TEST_TMP/$1.bad
	cp "$expected" "$bad"
	flip_byte "$bad" $(($(wc -c <"$bad") - 4))
	openssl_verify "$sig" "$bad" "$CA_PEM" && fail "$name: openssl accepted a changed byte" ||
		pass "$name: openssl refuses a changed byte"
	gpgsm_verify "$sig" "$bad" && fail "$name: gpgsm accepted a changed byte" ||
		pass "$name: gpgsm refuses a changed byte"
	nss_verify "$sig" "$bad" && fail "$name: cmsutil accepted a changed byte" ||
		pass "$name: cmsutil refuses a changed byte"
}

# negative_opaque NAME TEXT: change a byte of TEXT inside the signature itself.
negative_opaque() {
	local name=$1 text=$2 sig=$TEST_TMP/$1.p7s bad=$TEST_TMP/$1.bad.p7s off
	cp "$sig" "$bad"
	off=$(grep -obaF "$text" "$bad" | head -n1 | cut -d: -f1)
	[ -n "$off" ] || { fail "$name: '$text' not found in the signature"; return 0; }
	flip_byte "$bad" "$off"
	openssl_verify "$bad" - "$CA_PEM" && fail "$name: openssl accepted a changed byte" ||
		pass "$name: openssl refuses a changed byte"
	gpgsm_verify "$bad" && fail "$name: gpgsm accepted a changed byte" ||
		pass "$name: gpgsm refuses a changed byte"
	nss_verify "$bad" && fail "$name: cmsutil accepted a changed byte" ||
		pass "$name: cmsutil refuses a changed byte"
}

RSA=rsa2048@example.org
P256="pkcs11:token=$TOKEN_LABEL;id=%03;type=cert"
P384="pkcs11:token=$TOKEN_LABEL;object=p384;type=private"

# ------------------------------------ every message, RSA-2048 v1.5, detached
for m in plain alt attach utf8 crlf entity empty; do
	msg=$M/$m.eml
	[ -f "$msg" ] || msg=$M/$m.mime
	sign_check "rsa-$m" "$msg" "$M/$m.expected" "$RSA" sha-256
done
negative rsa-plain "$M/plain.expected"
negative rsa-utf8 "$M/utf8.expected"

# The attachment survives: decode it from the signed entity.
perl -0ne 'print $1 if /filename="blob.bin"\r?\nContent-Transfer-Encoding: base64\r?\n\r?\n(.*?)\r?\n--mix--/s' \
	"$TEST_TMP/rsa-attach.signed" | base64 -d >"$TEST_TMP/blob.out" 2>/dev/null
cmp -s "$TEST_TMP/blob.bin" "$TEST_TMP/blob.out" && pass "attachment intact" || fail "attachment changed"

# ------------------------------------------- every message, P-256, opaque
for m in plain alt attach utf8 crlf entity empty; do
	msg=$M/$m.eml
	[ -f "$msg" ] || msg=$M/$m.mime
	sign_check "p256-opaque-$m" "$msg" "$M/$m.expected" "$P256" sha-256 --opaque
done
negative_opaque p256-opaque-plain "all is well"

# ------------------------------------------- the other keys and formats
sign_check rsa-pss "$M/plain.eml" "$M/plain.expected" "$RSA" sha-256 --pss
openssl cms -cmsout -print -inform DER -in "$TEST_TMP/rsa-pss.p7s" 2>/dev/null | grep -q rsassaPss &&
	pass "rsa-pss: the signature algorithm is RSASSA-PSS" || fail "rsa-pss: not RSASSA-PSS"
negative rsa-pss "$M/plain.expected"
sign_check rsa-pss-opaque "$M/crlf.eml" "$M/crlf.expected" "$RSA" sha-256 --pss --opaque
sign_check rsa-opaque "$M/plain.eml" "$M/plain.expected" "$RSA" sha-256 --opaque
sign_check p256 "$M/attach.eml" "$M/attach.expected" "$P256" sha-256
sign_check p384 "$M/plain.eml" "$M/plain.expected" "$P384" sha-384
negative p384 "$M/plain.expected"
sign_check p384-opaque "$M/utf8.eml" "$M/utf8.expected" "$P384" sha-384 --opaque
sign_check rsa-sha512 "$M/alt.eml" "$M/alt.expected" "$RSA" sha-512 --digest sha512

# ------------------------------------------------ standard in and out, --json
RUN_STDIN=$M/plain.eml run_p11smime --pin-source "file:$PIN_FILE" sign --signer "$RSA"
assert_exit 0 "stdin to stdout"
assert_contains "$OUT" "micalg=sha-256"
assert_contains "$OUT" "Subject: Quarterly figures,"
RUN_STDIN= run_p11smime --json --pin-source "file:$PIN_FILE" sign --signer "$P384" -i "$M/plain.eml" \
	-o "$TEST_TMP/json.signed"
assert_exit 0 "--json"
assert_json "$OUT" '.digest == "sha384" and .signature_algorithm == "ecdsa" and .mechanism == "CKM_ECDSA"' \
	"--json: digest, algorithm, mechanism"
assert_json "$OUT" '(.signer | startswith("pkcs11:")) and (.key | test("type=private")) and (.subject | test("p384"))' \
	"--json: signer URI, key URI, subject"

# ------------------------------------ large parts: written as they are read
# A top-level part of a file is written as it is scanned and taken back when
# it turns out 8-bit: megabytes of clean text, then one 8-bit byte (and a
# message/rfc822 around such a part, where the digest is restored mid-way).
# To a file, to standard output (past its memory block: the spill file is cut
# back) and from a pipe (read twice the old way): each verifies with OpenSSL
# and all sign the same entity.
{
	printf 'From: rsa2048@example.org\nSubject: large\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n\n'
	head -c 2200000 /dev/urandom | base64 -w 76
	printf 'caf\xe9 at the very end\n'
} >"$M/late8.eml"
{
	printf 'From: rsa2048@example.org\nSubject: wrapped\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n'
	printf 'Subject: inner\nContent-Type: text/plain\n\n'
	head -c 1500000 /dev/urandom | base64 -w 76
	printf 'na\xefve\n'
} >"$M/late8-rfc822.eml"
{
	printf 'From: rsa2048@example.org\nSubject: clean\nContent-Type: text/plain\n\n'
	head -c 2200000 /dev/urandom | base64 -w 64
} >"$M/clean-large.eml"
# A CRLF file (its clean blocks are written and digested as they are) and one
# whose lines end in LF, CRLF or CRCRLF by turns (blocks that take the long
# way, CRLFs cut by the edges of the blocks).
{
	printf 'From: rsa2048@example.org\r\nSubject: crlf\r\nContent-Type: text/plain\r\n\r\n'
	head -c 2200000 /dev/urandom | base64 -w 70 | sed 's/$/\r/'
} >"$M/clean-crlf.eml"
{
	printf 'From: rsa2048@example.org\r\nSubject: mixed\r\nContent-Type: text/plain\r\n\r\n'
	head -c 2200000 /dev/urandom | base64 -w 70 | awk '{ e = NR % 7 == 0 ? "" : NR % 5 == 0 ? "\r\r" : "\r"; printf "%s%s\n", $0, e }'
} >"$M/mixed-crlf.eml"
for m in late8 late8-rfc822 clean-large clean-crlf mixed-crlf; do
	# Not run_p11smime: its $STDOUT copy of megabytes would not fit in the environment.
	"$P11SMIME" --pin-source "file:$PIN_FILE" sign --signer "$RSA" -i "$M/$m.eml" -o "$TEST_TMP/$m.file" \
		</dev/null 2>"$TEST_TMP/$m.err" && pass "$m: signed to a file" ||
		{ fail "$m: signed to a file"; cat "$TEST_TMP/$m.err"; }
	"$P11SMIME" --pin-source "file:$PIN_FILE" sign --signer "$RSA" -i "$M/$m.eml" \
		</dev/null >"$TEST_TMP/$m.stdout" 2>"$TEST_TMP/$m.err" && pass "$m: signed to standard output" ||
		{ fail "$m: signed to standard output"; cat "$TEST_TMP/$m.err"; }
	cat "$M/$m.eml" | "$P11SMIME" --pin-source "file:$PIN_FILE" sign --signer "$RSA" \
		>"$TEST_TMP/$m.pipe" 2>"$TEST_TMP/$m.err" && pass "$m: signed from a pipe" ||
		{ fail "$m: signed from a pipe"; cat "$TEST_TMP/$m.err"; }
	for how in file stdout pipe; do
		openssl cms -verify -in "$TEST_TMP/$m.$how" -CAfile "$CA_PEM" -out "$TEST_TMP/$m.$how.content" >/dev/null 2>&1 &&
			pass "$m: $how: the whole message verifies" || fail "$m: $how: the whole message does not verify"
	done
	cmp -s "$TEST_TMP/$m.file.content" "$TEST_TMP/$m.pipe.content" &&
		cmp -s "$TEST_TMP/$m.stdout.content" "$TEST_TMP/$m.pipe.content" &&
		pass "$m: file, standard output and pipe sign the same entity" ||
		fail "$m: the signed entities differ"
	n=$(grep -c "^Content-Transfer-Encoding: quoted-printable" "$TEST_TMP/$m.file")
	case $m in
	late8*) [ "$n" = 1 ] && pass "$m: the part became quoted-printable" || fail "$m: not quoted-printable" ;;
	*) [ "$n" = 0 ] && pass "$m: the part stayed as it was" || fail "$m: the part was encoded" ;;
	esac
done

finish
