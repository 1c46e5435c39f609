#!/usr/bin/env bash
# neomutt for real, driven in tmux with the neomuttrc fragment of
# docs/clients/neomutt.md loaded verbatim: it sends a signed mail (the PIN
# typed at neomutt's passphrase prompt) through a fake sendmail, checked
# with OpenSSL, gpgsm and p11smime, and an encrypted one both recipients
# decrypt on the token; it reads a signed, an encrypted, an altered and an
# opaque-signed mail and shows the content and the verdict.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

if ! command -v neomutt >/dev/null || ! command -v tmux >/dev/null; then
	fail "neomutt and tmux are needed (tools/install-deps.sh installs them)"
	finish
fi
new_token
T=$TEST_TMP
H=$T/home
mkdir -p "$H/.config/p11smime/contacts" "$H/Mail" "$T/bin" "$T/sent"
cp "$CA_PEM" "$H/.config/p11smime/trust.pem"
printf 'module = %s\nsigner = rsa2048@example.org\n' "$SOFTHSM_MODULE" >"$H/.config/p11smime/config"
ln -s "$P11SMIME" "$T/bin/p11smime"

# The fragment exactly as the documentation gives it.
awk '/^```muttrc$/ { f = 1; next } /^```$/ { if (f) exit } f' \
	"$P11S_SRCDIR/docs/clients/neomutt.md" >"$T/fragment.rc"
assert_contains "$T/fragment.rc" "smime_sign_command"
cat >"$T/fake-sendmail" <<SH
#!/bin/sh
printf '%s\n' "\$@" >"$T/sent/argv"
cat >"$T/sent/mail"
SH
chmod +x "$T/fake-sendmail"
touch "$T/inbox"
cat >"$T/neomuttrc" <<RC
source $T/fragment.rc
set folder = "$H/Mail"
set spoolfile = "$T/inbox"
set from = "Alice <rsa2048@example.org>"
set sendmail = "$T/fake-sendmail"
set editor = "true"
set record = ""
set postponed = "$H/Mail/postponed"
set sort = mailbox-order
set quit = yes
set move = no
set wait_key = no
RC

SOCK=$T/tmux.sock
tmux_cleanup() { tmux -S "$SOCK" kill-server 2>/dev/null || true; }
# Chain onto interop.sh's exit trap (gpg-agent, then lib.sh's report).
trap '_n_rc=$?; tmux_cleanup; _interop_cleanup; (exit $_n_rc); _t_on_exit' EXIT
NSTART=0
start() { # ARGS...: neomutt in a fresh tmux session
	tmux -S "$SOCK" kill-server 2>/dev/null || true
	# A new server on a new socket: the old one may still be shutting down on
	# its socket, and a client that reaches it gets "server exited unexpectedly".
	NSTART=$((NSTART + 1))
	SOCK=$T/tmux.$NSTART.sock
	tmux -S "$SOCK" new-session -d -s nm -x 160 -y 50 \
		"env HOME=$H PATH=$T/bin:$PATH TERM=xterm SOFTHSM2_CONF=$SOFTHSM2_CONF \
		P11SMIME_MODULE=$P11SMIME_MODULE LSAN_OPTIONS=${LSAN_OPTIONS:-} \
		neomutt -n -F $T/neomuttrc $*; echo NEOMUTT-EXIT \$?; sleep 600"
}
keys() { tmux -S "$SOCK" send-keys -t nm "$@"; }
SCREEN=$T/screen
wait_for() { # TEXT [SECONDS]: until the screen shows TEXT
	local i
	for ((i = 0; i < ${2:-20} * 4; i++)); do
		tmux -S "$SOCK" capture-pane -p -t nm >"$SCREEN" 2>/dev/null
		grep -qF -- "$1" "$SCREEN" && return 0
		sleep 0.25
	done
	return 1
}
step() { # TEXT MSG: wait for TEXT, count a pass or a fail showing the screen
	if wait_for "$1" "${3:-20}"; then
		pass "$2"
	else
		fail "$2 (the screen never showed '$1')"
		sed 's/^/  | /' "$SCREEN" | grep -v '^  | *$'
	fi
}

# ------------------------------------------------------------ send signed
cat >"$T/draft.eml" <<'MSG'
From: Alice <rsa2048@example.org>
To: Bob <bob@example.net>
Subject: signed from neomutt

Hello Bob, this is signed on the token.
MSG
start -H "$T/draft.eml"
step "To: Bob" "neomutt asks for the recipient"
keys Enter
step "Subject: signed from neomutt" "then the subject"
keys Enter
step "Compose" "then the compose menu"
keys S
step "(s)ign" "the S/MIME menu"
keys s
step "Sign (S/MIME)" "S/MIME signing chosen"
keys y
step "Enter S/MIME passphrase" "neomutt asks for the passphrase: the token's PIN"
keys "$PIN" Enter
step "NEOMUTT-EXIT 0" "neomutt sent the mail and exited" 60
assert_file_present "$T/sent/mail"
assert_contains "$T/sent/argv" "bob@example.net"
assert_contains "$T/sent/mail" "Content-Type: multipart/signed"
if openssl cms -verify -in "$T/sent/mail" -CAfile "$CA_PEM" -out "$T/content" 2>"$T/ossl.err"; then
	pass "openssl cms -verify: the mail neomutt sent is good"
else
	fail "openssl cms -verify of neomutt's mail"
	cat "$T/ossl.err"
fi
assert_contains "$T/content" "Hello Bob, this is signed on the token."
run_p11smime verify --trust "$CA_PEM" -i "$T/sent/mail"
assert_exit 0 "p11smime verify: good"
assert_contains "$OUT" "From rsa2048@example.org is among the signer's addresses"
# gpgsm, over the first part cut out of the mail by hand.
if smime_signature "$T/sent/mail" "$T/sig.der" && gpgsm_setup "$CA_PEM"; then
	perl -e '
		local $/; my $m = <STDIN>;
		my ($b) = $m =~ /boundary="([^"]+)"/ or die "no boundary\n";
		my ($part) = $m =~ /\n--\Q$b\E\r?\n(.*?)\r?\n--\Q$b\E/s or die "no part\n";
		$part =~ s/\r*\n/\r\n/g; print $part;' <"$T/sent/mail" >"$T/part1"
	gpgsm_verify "$T/sig.der" "$T/part1" && pass "gpgsm --verify: good" ||
		{ fail "gpgsm --verify of neomutt's mail"; cat "$TEST_TMP/gpgsm.log"; }
fi

# ---------------------------------------------------------- send encrypted
# neomutt finds recipients' certificates through the index smime_keys
# keeps (mailbox, file name, label, issuer, trust, purpose); with
# smime_self_encrypt (the default) it adds $smime_default_key's file.
C=$H/.config/p11smime/contacts
cp "$CERTS_DIR/p256.pem" "$C/p256.0"
cp "$CERTS_DIR/rsa2048.pem" "$C/p11smime"
echo "p256@example.org p256.0 carol ? t e" >"$C/.index"
mv "$T/sent/mail" "$T/signed.eml"
cat >"$T/draft2.eml" <<'MSG'
From: Alice <rsa2048@example.org>
To: Carol <p256@example.org>
Subject: encrypted from neomutt

For Carol's eyes only.
MSG
start -H "$T/draft2.eml"
step "To: Carol" "neomutt asks for the recipient"
keys Enter
step "Subject: encrypted from neomutt" "then the subject"
keys Enter
step "Compose" "then the compose menu"
keys S
step "(e)ncrypt" "the S/MIME menu"
keys e
step "Encrypt (S/MIME)" "S/MIME encryption chosen"
keys y
step "NEOMUTT-EXIT 0" "neomutt encrypted the mail through p11smime and sent it" 60
assert_file_present "$T/sent/mail"
assert_contains "$T/sent/mail" "smime-type=enveloped-data"
openssl cms -cmsout -print -in "$T/sent/mail" >"$T/print.txt" 2>/dev/null
assert_contains "$T/print.txt" "contentType: pkcs7-envelopedData"
assert_contains "$T/print.txt" "aes-256-cbc"
for who in p256 rsa2048; do
	run_p11smime --pin-source "file:$PIN_FILE" decrypt -i "$T/sent/mail" -o "$T/dec-$who" \
		--key "$who@example.org"
	assert_exit 0 "$who decrypts what neomutt sent"
	assert_contains "$T/dec-$who" "For Carol's eyes only."
done

# --------------------------------------------------------------- read mail
mbox_add() { # FILE: append a message to the inbox
	{ echo "From sender@example.org Fri Dec  4 12:00:00 2026"; cat "$1"; echo; } >>"$T/inbox"
}
: >"$T/inbox"
mbox_add "$T/signed.eml"
printf 'From: Carol <p256@example.org>\nTo: rsa2048@example.org\nSubject: secret for alice\nDate: Fri, 4 Dec 2026 12:00:00 +0000\n\nThe launch code is 4711.\n' >"$T/secret.eml"
# AES-256-CBC: neomutt 20220429 does not recognise authEnveloped-data (GCM).
run_p11smime encrypt --cipher aes-256-cbc --recipient "$CERTS_DIR/rsa2048.pem" -i "$T/secret.eml" \
	-o "$T/enc.eml"
assert_exit 0 "an encrypted mail for alice"
mbox_add "$T/enc.eml"
sed 's/Hello Bob, this is signed/Hello Eve, this is signed/; s/^Subject: .*/Subject: altered on the way/' \
	"$T/signed.eml" >"$T/altered.eml"
mbox_add "$T/altered.eml"
printf 'From: Carol <p256@example.org>\nTo: rsa2048@example.org\nSubject: opaque from carol\nDate: Fri, 4 Dec 2026 12:00:00 +0000\n\nSigned inside the signature.\n' >"$T/opaque-src.eml"
run_p11smime --pin-source "file:$PIN_FILE" sign --opaque --signer p256@example.org \
	-i "$T/opaque-src.eml" -o "$T/opaque.eml"
assert_exit 0 "an opaque-signed mail from carol"
mbox_add "$T/opaque.eml"

start -f "$T/inbox"
step "signed from neomutt" "neomutt lists the inbox"
keys Enter
step "S/MIME signature successfully verified" "the signed mail: neomutt says the signature is good"
step "Hello Bob, this is signed on the token." "and shows the content"
step "good signature by rsa2048@example.org" "and p11smime's report"
keys j
step "Enter S/MIME passphrase" "the encrypted mail: the PIN is asked"
keys "$PIN" Enter
step "The launch code is 4711." "the encrypted mail: decrypted on the token and shown"
step "S/MIME encrypted" "marked as encrypted"
keys j
step "S/MIME signature could NOT be verified" "the altered mail: neomutt says the signature is not good"
step "BAD SIGNATURE" "and p11smime's report says why"
keys j
step "Signed inside the signature." "the opaque mail: the content shown"
step "S/MIME signature successfully verified" "and the signature good"
finish
