#!/usr/bin/env bash
# p11smime verify: messages signed by openssl cms and gpgsm, trust only from
# --trust (files and token URIs), distrust, tampering, sender mismatch,
# expiry, and what -o writes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
T=$TEST_TMP
unwind_modules # --trust pkcs11: loads every module p11-kit knows

# A software signer issued by the test CA, and one by a CA nobody trusts.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/alice.key" 2>/dev/null
SAN_EMAIL=alice@example.org ca_issue "key:$T/alice.key" "$T/alice.pem" smime-ec --cn Alice --days 60
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/bob.key" 2>/dev/null
SAN_EMAIL=bob@example.org ca_issue "key:$T/bob.key" "$T/bob.pem" smime-rsa --cn Bob

mkdir "$T/ca2"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca2/ca.key" \
	-out "$T/ca2/ca.pem" -subj "/CN=Untrusted Other CA" -days 30 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/eve.key" 2>/dev/null
bash "$P11S_SRCDIR/softhsm-conf/issue-cert.sh" --ca-dir "$T/ca2" --key "key:$T/eve.key" \
	--out "$T/eve.pem" --profile smime-ec --email alice@example.org --cn "Alice (not really)"

for f in alice.pem bob.pem eve.pem ca2/ca.pem; do
	[ -s "$T/$f" ] || fail "setup: $f was not made"
done

printf 'Content-Type: text/plain; charset=us-ascii\n\nHello Bob,\nthe report is attached.\n' \
	>"$T/entity.txt"
crlf "$T/entity.txt" "$T/entity.crlf"
headers() { # FROM
	printf 'From: Someone <%s>\nTo: bob@example.org\nSubject: report\nDate: Sat, 28 Nov 2026 10:00:00 +0000\n' "$1"
}
# sign_openssl CERT KEY FROM OUT [cms args...]: a whole message signed by openssl cms
sign_openssl() {
	local cert=$1 key=$2 from=$3 out=$4
	shift 4
	openssl cms -sign -signer "$cert" -inkey "$key" -in "$T/entity.txt" -out "$T/part.eml" "$@" ||
		{ fail "openssl cms -sign $*"; return 1; }
	{ headers "$from"; cat "$T/part.eml"; } >"$out"
}

# ---------------------------------------------------------------- good
sign_openssl "$T/alice.pem" "$T/alice.key" alice@example.org "$T/detached.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/detached.eml" --entity-only -o "$T/content.out"
assert_exit 0 "openssl-signed detached message verifies against the test CA"
assert_contains "$OUT" "good signature by alice@example.org"
assert_contains "$OUT" "ECDSA with SHA256"
assert_contains "$OUT" "From alice@example.org is among the signer's addresses"
assert_contains "$OUT" "O=p11smime tests  (trusted)"
if cmp -s "$T/entity.crlf" "$T/content.out"; then
	pass "-o wrote the signed entity, canonical"
else
	fail "-o content differs from the signed entity"
fi

sign_openssl "$T/bob.pem" "$T/bob.key" bob@example.org "$T/opaque.eml" -nodetach
run_p11smime verify --trust "$CA_PEM" -i "$T/opaque.eml" --entity-only -o "$T/opaque.out"
assert_exit 0 "opaque (signed-data) message verifies"
assert_contains "$OUT" "format:      opaque"
assert_contains "$OUT" "RSA PKCS#1 v1.5 with SHA256"
cmp -s "$T/entity.crlf" "$T/opaque.out" && pass "opaque content written" || fail "opaque content differs"

sign_openssl "$T/bob.pem" "$T/bob.key" bob@example.org "$T/pss.eml" -keyopt rsa_padding_mode:pss -md sha384
run_p11smime --json verify --trust "$CA_PEM" -i "$T/pss.eml"
assert_exit 0 "RSA-PSS/SHA-384 message verifies"
assert_json "$OUT" '.verdict == "good" and .signers[0].signature_algorithm == "RSA-PSS" and .signers[0].digest == "SHA384"'
assert_json "$OUT" '.signers[0].emails == ["bob@example.org"] and .sender_matches == true'
assert_json "$OUT" '.signers[0].rules.verdict == "accepted" and (.signers[0].chain | length) == 2'

# LF-only message on disk (as a Unix mailbox keeps it) still verifies.
lf "$T/detached.eml" "$T/detached-lf.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/detached-lf.eml"
assert_exit 0 "LF line ends: OpenSSL canonicalises the signed part"

# Standard input, the usual pipeline use.
RUN_STDIN=$T/detached.eml run_p11smime verify --trust "$CA_PEM" --entity-only -o -
assert_exit 0 "message on stdin, content on stdout"
cmp -s "$T/entity.crlf" "$OUT" && pass "content on stdout" || fail "stdout content differs"
assert_contains "$ERR" "good signature"
# --json likewise: the report goes where the content is not (one rule for every command).
RUN_STDIN=$T/detached.eml run_p11smime --json verify --trust "$CA_PEM" --entity-only -o -
assert_exit 0 "--json -o -: content on stdout, the report beside it"
cmp -s "$T/entity.crlf" "$OUT" && pass "--json -o -: stdout is the content alone" ||
	fail "--json -o -: stdout differs from the content"
assert_json "$ERR" '.verdict == "good" and (.signers[0].rules | has("in_validity"))
	and (.signers[0].rules.checks[0] | has("affects_verdict"))
	and (.signers[0].serial | test("^[0-9a-f]+$"))' \
	"--json -o -: the report on stderr; rules in validate's shape; serial in lower case"

# ---------------------------------------------------- trust from the token
token_import_cert "$T/alice.pem" a1 alice-contact
run_p11smime verify --trust "pkcs11:token=$TOKEN_LABEL;object=alice-contact;type=cert" \
	-i "$T/detached.eml"
assert_exit 0 "an end-entity certificate on the token, named by URI, is trusted itself"
assert_contains "$OUT" "(trusted)"
run_p11smime verify --trust "pkcs11:token=$TOKEN_LABEL;object=rsa2048;type=cert" -i "$T/detached.eml"
assert_exit 1 "another token certificate does not vouch for alice"
run_p11smime verify --trust "pkcs11:token=$TOKEN_LABEL;object=nothing-here" -i "$T/detached.eml"
assert_exit 3 "a URI matching no certificate"

# ---------------------------------------------------------------- distrust
sign_openssl "$T/eve.pem" "$T/eve.key" alice@example.org "$T/eve.eml" -certfile "$T/ca2/ca.pem"
openssl cms -verify -in "$T/eve.eml" -CAfile "$T/ca2/ca.pem" -out /dev/null 2>/dev/null &&
	pass "control: eve's chain is complete (verifies against her own CA)" ||
	fail "control: eve's message should verify against ca2"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/eve.eml" -o "$T/eve.out"
assert_exit 1 "complete chain in the message, CA not supplied: untrusted"
assert_json "$OUT" '.verdict == "untrusted" and .signers[0].verdict == "untrusted"'
assert_file_absent "$T/eve.out"
run_p11smime verify -i "$T/eve.eml"
assert_exit 2 "no --trust at all: usage error, never the system store"

# ---------------------------------------------------------------- tampered
cp "$T/detached.eml" "$T/tampered.eml"
sed -i 's/the report is attached/the report is attacked/' "$T/tampered.eml"
cmp -s "$T/detached.eml" "$T/tampered.eml" && fail "tampering changed nothing"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/tampered.eml" -o "$T/tampered.out"
assert_exit 1 "tampered body: not good"
assert_json "$OUT" '.verdict == "bad-signature" and .signers[0].verdict == "bad-signature"'
assert_file_absent "$T/tampered.out"
assert_contains "$ERR" "the content was not written"
run_p11smime verify --trust "$CA_PEM" -i "$T/tampered.eml" -o "$T/tampered.out" --force-output
assert_exit 1 "--force-output keeps the exit code"
assert_contains "$OUT" "BAD SIGNATURE"
assert_contains "$T/tampered.out" "attacked"

# ---------------------------------------------------------- sender mismatch
sign_openssl "$T/alice.pem" "$T/alice.key" ceo@example.org "$T/spoof.eml"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/spoof.eml"
assert_exit 1 "From outside the signer's SAN: not good"
assert_json "$OUT" '.verdict == "sender-mismatch" and .signers[0].verdict == "good" and .sender_matches == false'
assert_json "$OUT" '.from == ["ceo@example.org"]'
run_p11smime verify --trust "$CA_PEM" -i "$T/spoof.eml"
assert_contains "$OUT" "NOT SIGNED BY ITS SENDER"

# A From header that does not parse (real mail has them): the signature is
# still checked and reported; only the sender cannot be confirmed.
sign_openssl "$T/alice.pem" "$T/alice.key" 'alice@example.org (unclosed comment' "$T/badfrom.eml"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/badfrom.eml"
assert_exit 1 "unreadable From: the sender is not confirmed"
assert_json "$OUT" '.verdict == "sender-mismatch" and .signers[0].verdict == "good" and .sender_matches == false and (.from_error | length > 0)'
run_p11smime verify --trust "$CA_PEM" -i "$T/badfrom.eml"
assert_contains "$OUT" "the From header cannot be read"

# ------------------------------------------------------------------ expiry
# A signer valid today, checked "a year later" with --at: the signature
# was made while it was valid, so it stays good and the expiry is stated.
later=$(date -u -d '+400 days' +%Y-%m-%d)
run_p11smime --json verify --trust "$CA_PEM" --at "$later" -i "$T/detached.eml"
assert_exit 0 "expired signer (at --at) still verifies: old mail stays checkable"
assert_json "$OUT" '.signers[0].valid_at == false and .signers[0].valid_at_signing_time == true'
run_p11smime verify --trust "$CA_PEM" --at "$later" -i "$T/detached.eml"
assert_contains "$OUT" "EXPIRED at $later"
# A certificate already expired when it signed: untrusted.
SAN_EMAIL=alice@example.org ca_issue "key:$T/alice.key" "$T/old.pem" smime-ec \
	--start 20200101000000Z --end 20210101000000Z
sign_openssl "$T/old.pem" "$T/alice.key" alice@example.org "$T/old.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/old.eml"
assert_exit 1 "signed after the signer expired: untrusted"
assert_contains "$OUT" "certificate has expired"

# ----------------------------------------------------------------- gpgsm
make_p12 "$T/bob.key" "$T/bob.pem" "$T/bob.p12" secret
if gpgsm_setup "$CA_PEM" && gpgsm_import_p12 "$T/bob.p12" secret; then
	gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --include-certs -1 \
		-u bob@example.org --detach-sign "$T/entity.crlf" <<<secret >"$T/gpgsm.sig" \
		2>"$T/gpgsm-sign.log" || { cat "$T/gpgsm-sign.log"; fail "gpgsm --detach-sign"; }
	{
		headers bob@example.org
		printf 'MIME-Version: 1.0\nContent-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="gpgsm-b"\n\n'
		printf -- '--gpgsm-b\r\n'
		cat "$T/entity.crlf"
		printf -- '\r\n--gpgsm-b\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n'
		base64 <"$T/gpgsm.sig"
		printf -- '\r\n--gpgsm-b--\r\n'
	} >"$T/gpgsm.eml"
	run_p11smime verify --trust "$CA_PEM" -i "$T/gpgsm.eml" --entity-only -o "$T/gpgsm.out"
	assert_exit 0 "a message signed by gpgsm verifies"
	assert_contains "$OUT" "good signature by bob@example.org"
	cmp -s "$T/entity.crlf" "$T/gpgsm.out" && pass "gpgsm content written" || fail "gpgsm content differs"
else
	fail "gpgsm setup"
fi

# ---------------------------------------------------------------- malformed
printf 'From: a@example.org\nSubject: plain\n\nnot signed\n' >"$T/plain.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/plain.eml" -o "$T/plain.out"
assert_exit 4 "an unsigned message is malformed input"
assert_contains "$ERR" "the message is not signed"
assert_file_absent "$T/plain.out"
head -c 600 "$T/detached.eml" >"$T/truncated.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/truncated.eml"
assert_exit 4 "a truncated message"
run_p11smime verify --trust "$CA_PEM" -i "$T/detached.eml" -o /dev/null
assert_exit 0 "-o to a device is written straight to it (nothing to rename into place)"
[ -c /dev/null ] && pass "/dev/null is still a device" || fail "/dev/null was replaced"
run_p11smime verify --trust "$T/plain.eml" -i "$T/detached.eml"
assert_exit 4 "a --trust file without certificates"

# Past the limit (4 GiB): a file is refused from its size, before anything
# is copied.  A sparse 5 GiB file, and at most 32 MiB for any file this
# process writes: copying it to the temporary file would fail ("cannot
# write a temporary file") instead of naming the size.
truncate -s 5G "$T/huge.eml"
(ulimit -f 65536 && exec "$P11SMIME" verify --trust "$CA_PEM" -i "$T/huge.eml") \
	</dev/null >"$T/huge.out" 2>"$T/huge.err"
RC=$?
assert_exit 4 "a 5 GiB message is refused"
assert_contains "$T/huge.err" "the message is too large to verify (over 4096 MiB)"
rm -f "$T/huge.eml"
# A large message (48 MB, past the 32 MiB at which a temporary file's
# pages first wait for the disk as they stream through the page cache).  -i FILE of multipart/signed is read where it
# is: only the signed part goes to a temporary file (before, the whole
# message was copied to one first).  Through standard input it is copied,
# and both give the same verdict and bytes.
{
	printf 'Content-Type: text/plain; charset=us-ascii\n\n'
	head -c 36000000 /dev/urandom | base64 -w 76
} >"$T/large.txt"
openssl cms -sign -signer "$T/alice.pem" -inkey "$T/alice.key" -in "$T/large.txt" \
	-out "$T/large.part" || fail "openssl cms -sign of 48 MB"
{ headers alice@example.org; cat "$T/large.part"; } >"$T/large.eml"
size=$(stat -c %s "$T/large.eml")
run_p11smime verify --trust "$CA_PEM" -i "$T/large.eml" --entity-only -o "$T/large.out"
assert_exit 0 "a 48 MB message verifies (-i FILE)"
assert_contains "$OUT" "good signature by alice@example.org"
crlf "$T/large.txt" "$T/large.crlf"
cmp -s "$T/large.crlf" "$T/large.out" && pass "-i FILE: the signed entity, whole" ||
	fail "-i FILE: the 48 MB entity differs"
# With the outer header fields, the entity's line ends follow them (LF):
# the message's own text again, after the outer fields.
run_p11smime verify --trust "$CA_PEM" -i "$T/large.eml" -o "$T/large.msg"
assert_exit 0 "a 48 MB message verifies, -o with the outer header fields"
tail -c "$(stat -c %s "$T/large.txt")" "$T/large.msg" | cmp -s - "$T/large.txt" &&
	pass "-o: the 48 MB entity with LF line ends, byte for byte" ||
	fail "-o: the 48 MB entity's LF form differs"
"$P11SMIME" verify --trust "$CA_PEM" --entity-only -o "$T/large.stdin" <"$T/large.eml" \
	>"$T/large.rep" 2>&1
assert_eq 0 $? "a 48 MB message verifies (standard input, spooled)"
cmp -s "$T/large.crlf" "$T/large.stdin" && pass "standard input: the signed entity, whole" ||
	fail "standard input: the 48 MB entity differs"
if command -v strace >/dev/null; then
	ASAN_OPTIONS=detect_leaks=0 strace -f -o "$T/large.trace" -e trace=write \
		"$P11SMIME" verify --trust "$CA_PEM" -i "$T/large.eml" >/dev/null 2>&1
	assert_eq 0 $? "verify -i FILE under strace"
	written=$(awk '/^[0-9]+ +write\([0-9]+,/ { n = $NF; if (n ~ /^[0-9]+$/) s += n } END { print s + 0 }' \
		"$T/large.trace")
	[ "$written" -lt $((size * 3 / 2)) ] &&
		pass "-i FILE: $written bytes written for a $size-byte message (the signed part)" ||
		fail "-i FILE: $written bytes written for a $size-byte message (copied whole first?)"
	# A disk failing the temporary file's writeback: a write error, not a
	# verdict (the spool would be read back with other bytes than written).
	ASAN_OPTIONS=detect_leaks=0 strace -f -o /dev/null -e trace=sync_file_range \
		-e inject=sync_file_range:error=EIO \
		"$P11SMIME" verify --trust "$CA_PEM" <"$T/large.eml" >"$T/eio.rep" 2>&1
	assert_eq 4 $? "verify with \$TMPDIR's disk failing writeback: exit 4"
	assert_contains "$T/eio.rep" "cannot write a temporary file: Input/output error"
	assert_not_contains "$T/eio.rep" "good signature"
fi
rm -f "$T"/large.*

# An opaque signature is read into memory by OpenSSL: past 1 GiB it is
# refused, where a multipart/signed message of that size is streamed.
{
	printf 'From: a@example.org\nMIME-Version: 1.0\n'
	printf 'Content-Type: application/pkcs7-mime; smime-type=signed-data\n'
	printf 'Content-Transfer-Encoding: base64\n\n'
} >"$T/opaque-big.eml"
truncate -s 1100M "$T/opaque-big.eml"
run_p11smime verify --trust "$CA_PEM" -i "$T/opaque-big.eml"
assert_exit 4 "an opaque message of 1100 MiB is refused"
assert_contains "$ERR" "the message is too large to verify unless it is multipart/signed (over 1024 MiB)"
rm -f "$T/opaque-big.eml"

finish
