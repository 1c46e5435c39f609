#!/usr/bin/env bash
# p11smime sendmail: a fake sendmail records its argv and standard input;
# signed mail is checked with OpenSSL, refused mail never reaches it, its
# exit code comes back, arguments pass through unchanged.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
PS=(--pin-source "file:$PIN_FILE")
FAKE=$T/fake-sendmail
cat >"$FAKE" <<'SH'
#!/bin/sh
# Records every argument on its own line, and the message.
: >"$FAKE_DIR/argv"
for a in "$@"; do printf '%s\n' "$a" >>"$FAKE_DIR/argv"; done
cat >"$FAKE_DIR/stdin"
exit "${FAKE_RC:-0}"
SH
chmod +x "$FAKE"
export FAKE_DIR=$T/sent
reset_fake() { rm -rf "$FAKE_DIR"; mkdir -p "$FAKE_DIR"; }

cat >"$T/msg.eml" <<'MSG'
From: Alice <rsa2048@example.org>
To: Bob <p256@example.org>
Cc: carol@example.net
Bcc: p384@example.org
Subject: Sent through the wrapper
Content-Type: text/plain; charset=us-ascii

Hello Bob.
MSG

send() { # ARGS...: run p11smime sendmail with msg.eml (or $MSG) on stdin
	reset_fake
	RUN_STDIN=${MSG:-$T/msg.eml} run_p11smime "${PS[@]}" sendmail --sendmail "$FAKE" "$@"
}

# ------------------------------------------------------------------ signed
send -oem -oi -- p256@example.org carol@example.net
assert_exit 0 "signed and passed on"
printf '%s\n' -oem -oi -- p256@example.org carol@example.net >"$T/want-argv"
cmp -s "$T/want-argv" "$FAKE_DIR/argv" && pass "arguments passed on unchanged, -- and all" ||
	{ fail "argv differs"; diff "$T/want-argv" "$FAKE_DIR/argv"; }
assert_contains "$FAKE_DIR/stdin" "Subject: Sent through the wrapper"
assert_contains "$FAKE_DIR/stdin" "Content-Type: multipart/signed"
if openssl cms -verify -in "$FAKE_DIR/stdin" -CAfile "$CA_PEM" -out "$T/content" 2>"$T/ossl.err"; then
	pass "openssl cms -verify: the mail sent is good"
else
	fail "openssl cms -verify of the sent mail"
	cat "$T/ossl.err"
fi
assert_contains "$T/content" "Hello Bob."
run_p11smime verify --trust "$CA_PEM" -i "$FAKE_DIR/stdin"
assert_exit 0 "p11smime verify: good, signed by its sender"
assert_contains "$OUT" "From rsa2048@example.org is among the signer's addresses"

# Unknown options and odd arguments are sendmail's, after p11smime's own.
send --signer rsa2048@example.org -oi -t --no-such-option "arg with space" -- -x
assert_exit 0 "--signer, then unknown options"
printf '%s\n' -oi -t --no-such-option "arg with space" -- -x >"$T/want-argv"
cmp -s "$T/want-argv" "$FAKE_DIR/argv" && pass "unknown options passed on" ||
	{ fail "argv differs"; diff "$T/want-argv" "$FAKE_DIR/argv"; }
send -- -oi -t
assert_exit 0 "a -- ending p11smime's options"
printf '%s\n' -oi -t >"$T/want-argv"
cmp -s "$T/want-argv" "$FAKE_DIR/argv" && pass "the -- after p11smime's options is not passed on" ||
	{ fail "argv differs"; diff "$T/want-argv" "$FAKE_DIR/argv"; }

# The real sendmail's exit code comes back.
FAKE_RC=75 send -t
assert_exit 75 "sendmail's exit code 75 (EX_TEMPFAIL) passed through"

# ------------------------------------------------------- cannot sign: nothing sent
sed 's/^From: .*/From: nobody@example.org/' "$T/msg.eml" >"$T/nobody.eml"
MSG=$T/nobody.eml send -t
assert_exit 3 "no certificate for the From address: exit 3"
assert_file_absent "$FAKE_DIR/stdin"
assert_contains "$ERR" "nothing was sent"
MSG=$T/nobody.eml send --allow-unsigned -t
assert_exit 0 "--allow-unsigned: passed on"
cmp -s "$T/nobody.eml" "$FAKE_DIR/stdin" && pass "--allow-unsigned passes the mail unchanged" ||
	fail "--allow-unsigned changed the mail"
assert_contains "$ERR" "unsigned"
sed '/^From: /d' "$T/msg.eml" >"$T/nofrom.eml"
MSG=$T/nofrom.eml send -t
assert_exit 2 "no From and no --signer"
assert_file_absent "$FAKE_DIR/stdin"
# A wrong PIN: the token says no, nothing is sent.
echo 000000 >"$T/badpin"
reset_fake
RUN_STDIN=$T/msg.eml run_p11smime --pin-source "file:$T/badpin" sendmail --sendmail "$FAKE" -t
assert_exit 3 "a wrong PIN: exit 3"
assert_file_absent "$FAKE_DIR/stdin"
# A sendmail that cannot run.
reset_fake
RUN_STDIN=$T/msg.eml run_p11smime "${PS[@]}" sendmail --sendmail "$T/absent" -t
assert_exit 4 "a sendmail that does not exist"
assert_contains "$ERR" "cannot run"

# ------------------------------------------------------------------ --encrypt
mkdir -p "$T/dir"
cp "$CERTS_DIR/p256.pem" "$CERTS_DIR/p384.pem" "$T/dir/"
send --encrypt --recipients-dir "$T/dir" -t
assert_exit 1 "--encrypt: carol has no certificate, exit 1"
assert_file_absent "$FAKE_DIR/stdin"
assert_contains "$ERR" "carol@example.net"
# carol gets a software key, so OpenSSL can open what is sent.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/carol.key" 2>/dev/null
SAN_EMAIL=carol@example.net ca_issue "key:$T/carol.key" "$T/dir/carol.pem" smime-ec >/dev/null
send --encrypt --recipients-dir "$T/dir" -t
assert_exit 0 "--encrypt with a certificate for To, Cc and Bcc"
assert_contains "$FAKE_DIR/stdin" "smime-type=authEnveloped-data"
assert_contains "$FAKE_DIR/stdin" "Subject: Sent through the wrapper"
openssl cms -cmsout -print -in "$FAKE_DIR/stdin" >"$T/print.txt" 2>/dev/null
n=$(grep -c "d.kari:" "$T/print.txt")
assert_eq 3 "$n" "three key-agreement recipients (To, Cc, Bcc)"
if openssl cms -decrypt -in "$FAKE_DIR/stdin" -inkey "$T/carol.key" -recip "$T/dir/carol.pem" \
	-out "$T/inner.eml" 2>"$T/ossl.err" &&
	openssl cms -verify -in "$T/inner.eml" -CAfile "$CA_PEM" -out "$T/inner.txt" 2>>"$T/ossl.err"; then
	pass "carol decrypts it, and inside is a good signature"
else
	fail "decrypt and verify the encrypted mail"
	cat "$T/ossl.err"
fi
assert_contains "$T/inner.txt" "Hello Bob."
run_p11smime sendmail --encrypt -t
assert_exit 2 "--encrypt without --recipients-dir"
run_p11smime sendmail --help
assert_exit 0 "--help"
assert_contains "$OUT" "--allow-unsigned"
finish
