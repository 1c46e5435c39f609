#!/usr/bin/env bash
# Malformed input, as broken mail and broken files arrive: every command gets
# truncated, bit-flipped, NUL-laced and line-shuffled inputs made from valid
# ones (a fixed seed, so a failure reproduces), plus a few crafted cases and
# a hostile PKCS#11 module.  Whatever the input, the tool must answer with an
# exit code in 0..4, never crash, hang or trip a sanitizer, and leave no
# output file (nor temporary file) behind when it fails.  Beyond that:
#   - a truncated encrypted or signed message, or a truncated certificate,
#     is refused (never exit 0);
#   - when decrypt (AES-GCM) or verify says 0 on a mutated message, what it
#     wrote is exactly what the unmutated message gives;
#   - no OpenSSL error-queue code (error:0680007B:...) reaches stderr.
. "$(dirname "$0")/lib.sh"

new_token
PS=(--pin-source "file:$PIN_FILE")
W=$TEST_TMP/w
M=$TEST_TMP/mutants
mkdir -p "$W" "$M"
SEED=20261128

# ------------------------------------------------------------ valid inputs

printf '%s\n' \
	'From: rsa2048@example.org' \
	'To: p256@example.org' \
	'Subject: malformed-input sweep' \
	'Message-ID: <sweep@example.org>' \
	'MIME-Version: 1.0' \
	'Content-Type: multipart/mixed; boundary="OUTER"' \
	'' \
	'preamble' \
	'--OUTER' \
	'Content-Type: text/plain; charset=utf-8' \
	'Content-Transfer-Encoding: 8bit' \
	'' \
	'Grüße, from the start of a line' \
	'From here on' \
	'.' \
	'--OUTER' \
	'Content-Type: multipart/alternative; boundary=inner' \
	'' \
	'--inner' \
	'Content-Type: text/plain' \
	'' \
	'plain' \
	'--inner' \
	'Content-Type: text/html' \
	'' \
	'<p>html</p>' \
	'--inner--' \
	'--OUTER' \
	'Content-Type: application/octet-stream' \
	'Content-Transfer-Encoding: base64' \
	'' \
	'AAECAwQFBgcICQoLDA0ODw==' \
	'--OUTER--' \
	'epilogue' >"$W/plain.eml"

run_p11smime "${PS[@]}" sign --signer rsa2048@example.org -i "$W/plain.eml" -o "$W/signed.eml"
assert_exit 0 "sign (detached) makes the valid input"
run_p11smime "${PS[@]}" sign --signer p256@example.org --opaque -i "$W/plain.eml" -o "$W/opaque.eml"
assert_exit 0 "sign (opaque) makes the valid input"
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" --recipient "$CERTS_DIR/p256.pem" \
	-i "$W/plain.eml" -o "$W/gcm.eml"
assert_exit 0 "encrypt (AES-GCM) makes the valid input"
openssl cms -encrypt -binary -aes-256-cbc -in "$W/plain.eml" -outform DER -out "$W/cbc.der" \
	"$CERTS_DIR/rsa2048.pem" || fail "openssl cms -encrypt"
openssl x509 -in "$CERTS_DIR/rsa2048.pem" -outform DER -out "$W/cert.der" || fail "openssl x509"
cp "$CERTS_DIR/rsa2048.pem" "$W/cert.pem"

# What the unmutated messages give: a mutant that passes must give the same.
run_p11smime verify --trust "$CA_PEM" -i "$W/signed.eml" --entity-only -o "$W/signed.ref"
assert_exit 0 "the detached signature verifies"
run_p11smime verify --trust "$CA_PEM" -i "$W/opaque.eml" --entity-only -o "$W/opaque.ref"
assert_exit 1 "the opaque signature verifies (From is not the P-256 signer: exit 1)"
run_p11smime verify --trust "$CERTS_DIR/p256.pem" -i "$W/opaque.eml" --entity-only -o "$W/opaque.ref" \
	--force-output
[ -s "$W/opaque.ref" ] || fail "no content from the opaque message"
run_p11smime "${PS[@]}" decrypt --entity -i "$W/gcm.eml" -o "$W/gcm.ref"
assert_exit 0 "the AES-GCM message decrypts"
run_p11smime "${PS[@]}" decrypt --inform der -i "$W/cbc.der" -o "$W/cbc.ref"
assert_exit 0 "the DER AES-CBC message decrypts"
cmp -s "$W/cbc.ref" "$W/plain.eml" || fail "the DER message does not decrypt to the original"

# ---------------------------------------------------------------- mutants

# mutate SRC TAG COUNT MODE: write COUNT mutants of SRC as $M/TAG.N.
# MODE trunc:LO:HI cuts at an offset in [LO, len-HI); mix applies one of
# flip, NUL, delete/duplicate/swap a line, mixed line ends, a junk byte, a
# broken boundary, a long header line, a cut.  Deterministic for a seed.
mutate() {
	python3 - "$@" "$SEED" "$M" <<'PY'
import random, sys, zlib
src, tag, count, mode, seed, out = sys.argv[1:7]
data = open(src, "rb").read()
rnd = random.Random(int(seed) ^ zlib.crc32(tag.encode()))
n = len(data)
def mix(d):
    k = rnd.choice(["flip", "flip", "nul", "del", "dup", "swap", "eol", "junk", "bound",
                    "long", "cut"])
    n = len(d)
    i = rnd.randrange(n)
    lines = d.split(b"\n")
    j = rnd.randrange(len(lines))
    if k == "flip":
        return d[:i] + bytes([d[i] ^ (1 << rnd.randrange(8))]) + d[i + 1:]
    if k == "nul":
        return d[:i] + b"\0" + d[i:]
    if k == "del":
        del lines[j]
    elif k == "dup":
        lines.insert(j, lines[j])
    elif k == "swap":
        h = rnd.randrange(len(lines))
        lines[j], lines[h] = lines[h], lines[j]
    elif k == "eol":
        lines = [l + b"\r" if rnd.random() < 0.5 else l for l in lines]
    elif k == "junk":
        return d[:i] + rnd.choice([b"!", b"=", b"-", b"\xff", b"\r", b" "]) + d[i:]
    elif k == "bound":
        b = [x for x, l in enumerate(lines) if l.startswith(b"--")] or [j]
        x = rnd.choice(b)
        lines[x] = rnd.choice([lines[x][:-1], lines[x] + b"x", b""])
    elif k == "long":
        lines.insert(rnd.randrange(min(len(lines), 6)), b"X-Long: " + b"a" * 70000)
    else:
        return d[:i]
    return b"\n".join(lines)
for c in range(int(count)):
    if mode.startswith("trunc:"):
        _, lo, hi = mode.split(":")
        lo = int(lo)
        m = data[:rnd.randrange(lo, max(lo + 1, n - int(hi)))]
    else:
        m = mix(data)
    open("%s/%s.%d" % (out, tag, c), "wb").write(m)
PY
}

# The first byte after the header block (the body) of FILE.
body_offset() {
	python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(d.index(b"\n\n")+2)' "$1"
}
# Where the closing delimiter of the outer multipart of FILE starts.
closing_offset() {
	python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(d.rindex(b"\n--OUTER--"))' "$1"
}

mutate "$W/gcm.eml" dec-trunc 20 trunc:0:8
mutate "$W/gcm.eml" dec-mix 24 mix
mutate "$W/cbc.der" der-trunc 10 trunc:0:1
mutate "$W/cbc.der" der-mix 10 mix
mutate "$W/signed.eml" ver-trunc 20 trunc:0:8
mutate "$W/signed.eml" ver-mix 24 mix
mutate "$W/opaque.eml" opq-trunc 10 trunc:0:8
mutate "$W/opaque.eml" opq-mix 15 mix
mutate "$W/plain.eml" sign-trunc 12 "trunc:$(body_offset "$W/plain.eml"):$(($(wc -c <"$W/plain.eml") - $(closing_offset "$W/plain.eml")))"
mutate "$W/plain.eml" sign-mix 20 mix
mutate "$W/plain.eml" enc-mix 12 mix
mutate "$W/cert.der" der-cert-trunc 6 trunc:0:1
mutate "$W/cert.pem" pem-cert-trunc 6 trunc:0:30
mutate "$W/cert.der" der-cert-mix 6 mix
mutate "$W/cert.pem" pem-cert-mix 6 mix

# ------------------------------------------------------------------ checks

BAD=0 # violations in the current group
RUNS=0

# check MUST_FAIL REF -- ARGS...: run p11smime ARGS (which write to $W/out)
# and check the invariants.  MUST_FAIL 1: exit 0 is a violation.  REF (or
# ''): when the run exits 0, $W/out must equal it.
check() {
	local must_fail=$1 ref=$2 what
	shift 3
	rm -f "$W/out"
	RUNS=$((RUNS + 1))
	P11S_TIMEOUT=20 run_p11smime "$@"
	what="p11smime $* (exit $RC)"
	case $RC in
	0 | 1 | 2 | 3 | 4) ;;
	124)
		fail "hang: $what"
		BAD=$((BAD + 1))
		;;
	*)
		fail "exit code out of range: $what"
		BAD=$((BAD + 1))
		;;
	esac
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$ERR"; then
		fail "sanitizer report: $what"
		grep -m1 -A6 -E 'ERROR: |runtime error:' "$ERR" | sed 's/^/  | /'
		BAD=$((BAD + 1))
	fi
	# Input of the wrong kind gets a sentence, never OpenSSL's error-queue codes.
	if grep -qE 'error:[0-9A-F]{8}' "$ERR"; then
		fail "OpenSSL error code on stderr: $what"
		grep -m1 -E 'error:[0-9A-F]{8}' "$ERR" | sed 's/^/  | /'
		BAD=$((BAD + 1))
	fi
	if compgen -G "$W/.p11smime-*" >/dev/null; then
		fail "temporary file left behind: $what"
		rm -f "$W"/.p11smime-*
		BAD=$((BAD + 1))
	fi
	if [ "$RC" != 0 ] && [ -e "$W/out" ]; then
		fail "output file written although the command failed: $what"
		BAD=$((BAD + 1))
	fi
	if [ "$RC" = 0 ] && [ "$must_fail" = 1 ]; then
		fail "a truncated input was accepted: $what"
		BAD=$((BAD + 1))
	fi
	if [ "$RC" = 0 ] && [ -n "$ref" ] && ! cmp -s "$W/out" "$ref"; then
		fail "exit 0 but the output differs from the unmutated message's: $what"
		BAD=$((BAD + 1))
	fi
}

# sweep TAG MUST_FAIL REF -- ARGS-BEFORE-INPUT: every mutant TAG.N through check.
sweep() {
	local tag=$1 must_fail=$2 ref=$3 f n=0
	shift 4
	BAD=0
	for f in "$M/$tag".*; do
		check "$must_fail" "$ref" -- "$@" -i "$f" -o "$W/out"
		n=$((n + 1))
	done
	[ $BAD = 0 ] && pass "$tag: $n mutants, every invariant held"
}

sweep dec-trunc 1 "" -- "${PS[@]}" decrypt --entity
sweep dec-mix 0 "$W/gcm.ref" -- "${PS[@]}" decrypt --entity
sweep der-trunc 1 "" -- "${PS[@]}" decrypt --inform der
sweep der-mix 0 "" -- "${PS[@]}" decrypt --inform der
sweep ver-trunc 1 "" -- verify --trust "$CA_PEM"
sweep ver-mix 0 "$W/signed.ref" -- verify --entity-only --trust "$CA_PEM"
sweep opq-trunc 1 "" -- verify --trust "$CERTS_DIR/p256.pem"
sweep opq-mix 0 "$W/opaque.ref" -- verify --entity-only --trust "$CERTS_DIR/p256.pem"
sweep sign-trunc 1 "" -- "${PS[@]}" sign --signer rsa2048@example.org
sweep sign-mix 0 "" -- "${PS[@]}" sign --signer rsa2048@example.org
sweep enc-mix 0 "" -- encrypt --no-check-recipients --recipient "$CERTS_DIR/rsa2048.pem"

# Certificate files: as validate targets, as --trust, as --recipient.
for tag in der-cert-trunc pem-cert-trunc der-cert-mix pem-cert-mix; do
	BAD=0
	must=0
	case $tag in *-trunc) must=1 ;; esac
	for f in "$M/$tag".*; do
		check "$must" "" -- validate "$f"
		check "$must" "" -- verify --trust "$f" -i "$W/signed.eml" -o "$W/out"
		check "$must" "" -- encrypt --no-check-recipients --recipient "$f" \
			-i "$W/plain.eml" -o "$W/out"
	done
	[ $BAD = 0 ] && pass "$tag: validate, verify --trust, encrypt --recipient held"
done

# ------------------------------------------------------------- crafted ones

# NUL bytes in header blocks.  A NUL at the start of a header line made the
# file reader see the end of the headers: the rest were signed as body, exit 0.
printf 'From: rsa2048@example.org\nTo: a@example.org\n\0X-Bad: 1\nSubject: lost\n\nbody\n' \
	>"$W/nul-start.eml"
check 1 "" -- "${PS[@]}" sign --signer rsa2048@example.org -i "$W/nul-start.eml" -o "$W/out"
assert_exit 4 "sign refuses a NUL at the start of a header line"
assert_contains "$ERR" "header line 3 holds a NUL byte"
assert_file_absent "$W/out"
check 1 "" -- encrypt --no-check-recipients --recipient "$W/cert.pem" -i "$W/nul-start.eml" \
	-o "$W/out"
assert_exit 4 "encrypt refuses a NUL at the start of a header line"
# In a part's header it was read past the end of a buffer (ASan).
sed 's/^Content-Type: text\/html$/Content-Type: text\/html\nX-Bad: a\x00b/' "$W/plain.eml" \
	>"$W/nul-part.eml"
check 1 "" -- "${PS[@]}" sign --signer rsa2048@example.org -i "$W/nul-part.eml" -o "$W/out"
assert_exit 4 "sign refuses a NUL in a part's header"
assert_contains "$ERR" "NUL byte"
sed '2s/^/X-Bad: a\x00b\n/' "$W/gcm.eml" >"$W/nul-dec.eml"
check 1 "" -- "${PS[@]}" decrypt -i "$W/nul-dec.eml" -o "$W/out"
assert_exit 4 "decrypt refuses a NUL in a header"
check 1 "" -- verify --trust "$CA_PEM" -i "$W/nul-dec.eml" -o "$W/out"
assert_exit 4 "verify refuses a NUL in a header"

# A directory given as the input: said plainly, for every command.
mkdir -p "$W/dir"
for cmd in "verify --trust $CA_PEM" "decrypt" "sign --signer rsa2048@example.org" \
	"encrypt --no-check-recipients --recipient $W/cert.pem"; do
	# shellcheck disable=SC2086
	check 1 "" -- "${PS[@]}" $cmd -i "$W/dir" -o "$W/out"
	assert_exit 4 "${cmd%% *} -i DIRECTORY"
	assert_contains "$ERR" "is a directory"
done

# Empty input, and MIME nesting far deeper than anyone writes.
: >"$W/empty.eml"
for cmd in "verify --trust $CA_PEM" "decrypt" "sign --signer rsa2048@example.org" \
	"encrypt --no-check-recipients --recipient $W/cert.pem"; do
	# shellcheck disable=SC2086
	check 1 "" -- "${PS[@]}" $cmd -i "$W/empty.eml" -o "$W/out"
	assert_exit 4 "${cmd%% *} on an empty input"
done
python3 - "$W/deep.eml" <<'PY'
import sys
n = 1000
b = b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b0\n\n"
for i in range(n):
    b += b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
b += b"--b%d\n\nleaf\n--b%d--\n" % (n, n)
for i in range(n - 1, -1, -1):
    b += b"--b%d--\n" % i
open(sys.argv[1], "wb").write(b)
PY
check 1 "" -- "${PS[@]}" sign --signer rsa2048@example.org -i "$W/deep.eml" -o "$W/out"
assert_exit 4 "sign refuses 1000 nested multiparts"
assert_contains "$ERR" "nesting is deeper"

# A signer certificate in the message whose public key does not decode: said
# so, not blamed on OpenSSL lacking an algorithm.
openssl x509 -in "$CERTS_DIR/p256.pem" -pubkey -noout | openssl pkey -pubin -outform DER \
	-out "$W/p256.spki" || fail "openssl pkey"
python3 - "$W/opaque.eml" "$W/p256.spki" "$W/badkey.eml" <<'PY'
import base64, sys
msg = open(sys.argv[1], "rb").read()
point = open(sys.argv[2], "rb").read()[-65:]
head, body = msg.split(b"\n\n", 1)
der = base64.b64decode(body)
assert der.count(point) == 1
der = der.replace(point, b"\x05" + point[1:])
b64 = base64.encodebytes(der)
open(sys.argv[3], "wb").write(head + b"\n\n" + b64)
PY
check 1 "" -- verify --trust "$CA_PEM" -i "$W/badkey.eml" -o "$W/out"
assert_exit 4 "verify: a signer key that does not decode is malformed input"
assert_contains "$OUT" "public key that does not decode"

# --------------------------------------------------------- hostile module

# A module whose attribute lengths are absurd or lie, or whose object search
# never ends: the listing goes on without the attribute, or stops with exit
# 3; before, the first aborted (a 2^60-byte malloc), the second read past a
# buffer, the third never returned.
mock_token huge-length
check 0 "" -- list
assert_exit 0 "a 2^60-byte CKA_LABEL is treated as unavailable"
assert_contains "$OUT" "mock@example.org"
mock_token lying-length
check 0 "" -- list
assert_exit 0 "a CKA_VALUE read that claims more than its buffer is not used"
assert_contains "$OUT" "(the certificate does not parse)"
mock_token find-forever
check 1 "" -- list
assert_exit 3 "an object search that never ends is a module fault"
assert_contains "$ERR" "does not end"

echo "$RUNS runs"
finish
