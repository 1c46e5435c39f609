#!/usr/bin/env bash
# The four commands in one pipeline on a SoftHSM token:
#   sign | encrypt | decrypt | verify
# for RSA and EC keys: the verified content equals the original entity and
# the outer headers survive every step.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/interop.sh"

new_token
T=$TEST_TMP
P=("$P11SMIME" --pin-source "file:$PIN_FILE")

# roundtrip NAME SIGNER RECIPIENT MSG (after export_vars with the same)
roundtrip() {
	local name=$1 signer=$2 msg=$4
	local out=$T/$name.out rc
	canonical_entity "$msg" "$T/$name.want"
	# setsid: no terminal, so a PIN prompt would fail rather than wait.
	# Each stage starts once its input is complete (w): SoftHSM's file store
	# is not safe for processes that open one token at the same moment (a
	# process starting while another logs in may see the token
	# uninitialised, SoftHSMv2 issue 757).  Every stage writes its output
	# only when done anyway, so this changes nothing else.
	setsid -w bash -c '
		w() { local f; f=$(mktemp "$T/stage.XXXXXX"); cat >"$f"; "$@" <"$f"; }
		"$@" sign --signer "$S" <"$M" |
			w "$@" encrypt --recipient "$R" |
			w "$@" decrypt |
			w "$@" verify --trust "$CA" --entity-only -o "$O" >"$V" 2>&1
		s=("${PIPESTATUS[@]}"); echo "${s[*]}" >"$ST"; [ "${s[*]}" = "0 0 0 0" ]' \
		_ "${P[@]}" </dev/null 2>"$T/$name.err"
	rc=$?
	if [ $rc = 0 ]; then
		pass "$name: sign | encrypt | decrypt | verify all exit 0"
	else
		fail "$name: pipeline statuses $(cat "$T/$name.status" 2>/dev/null)"
		cat "$T/$name.err" "$T/$name.verify" 2>/dev/null | head -20
	fi
	if cmp -s "$T/$name.want" "$out"; then
		pass "$name: verified content equals the original entity"
	else
		fail "$name: verified content differs from the original entity"
		diff <(od -c "$T/$name.want" | head -20) <(od -c "$out" 2>/dev/null | head -20)
	fi
	assert_contains "$T/$name.verify" "good signature by $signer"
	assert_contains "$T/$name.verify" "From $signer is among the signer's addresses"
}
export_vars() { # NAME SIGNER RECIPIENT MSG
	export T S=$2 R=$3 M=$4 CA=$CA_PEM O=$T/$1.out V=$T/$1.verify ST=$T/$1.status
}

mkmsg() { # FROM TO OUT EOL
	{
		printf 'From: Sender <%s>\nTo: <%s>\nSubject: round trip %s\n' "$1" "$2" "$4"
		printf 'Message-ID: <%s@example.org>\nMIME-Version: 1.0\n' "$RANDOM"
		printf 'Content-Type: multipart/alternative; boundary="alt"\n\n'
		printf -- '--alt\nContent-Type: text/plain; charset=us-ascii\n\nplain part\n\n'
		printf -- '--alt\nContent-Type: text/html; charset=us-ascii\n\n<p>html part</p>\n\n--alt--\n'
	} >"$3.lf"
	if [ "$4" = crlf ]; then crlf "$3.lf" "$3"; else mv "$3.lf" "$3"; fi
}

mkmsg rsa2048@example.org rsa2048@example.org "$T/rsa.eml" lf
export_vars rsa rsa2048@example.org rsa2048@example.org "$T/rsa.eml"
roundtrip rsa rsa2048@example.org rsa2048@example.org "$T/rsa.eml"

mkmsg p256@example.org p256@example.org "$T/ec.eml" crlf
export_vars ec p256@example.org p256@example.org "$T/ec.eml"
roundtrip ec p256@example.org p256@example.org "$T/ec.eml"

# Mixed: RSA signer, P-384 recipient.
mkmsg rsa3072@example.org p384@example.org "$T/mixed.eml" lf
export_vars mixed rsa3072@example.org p384@example.org "$T/mixed.eml"
roundtrip mixed rsa3072@example.org p384@example.org "$T/mixed.eml"

# Opaque signing and the headers through every step, one step at a time.
mkmsg p384@example.org rsa2048@example.org "$T/steps.eml" lf
run_p11smime --pin-source "file:$PIN_FILE" sign --signer p384@example.org --opaque \
	-i "$T/steps.eml" -o "$T/steps.signed"
assert_exit 0 "sign --opaque"
run_p11smime encrypt --recipient rsa2048@example.org --cipher aes-128-cbc --oaep \
	-i "$T/steps.signed" -o "$T/steps.enc"
assert_exit 0 "encrypt a signed message (AES-128-CBC, RSA-OAEP)"
run_p11smime --pin-source "file:$PIN_FILE" decrypt -i "$T/steps.enc" -o "$T/steps.dec"
if [ "$RC" = 0 ]; then
	pass "decrypt"
	for h in "Subject: round trip lf" "From: Sender <p384@example.org>" "Message-ID:"; do
		assert_contains "$T/steps.dec" "$h"
	done
	run_p11smime --json verify --trust "$CA_PEM" -i "$T/steps.dec" --entity-only -o "$T/steps.out"
	assert_exit 0 "verify the decrypted opaque message"
	assert_json "$OUT" '.format == "opaque" and .signers[0].digest == "SHA384" and .signers[0].signature_algorithm == "ECDSA"'
	canonical_entity "$T/steps.eml" "$T/steps.want"
	cmp -s "$T/steps.want" "$T/steps.out" && pass "opaque round trip: content equals the original" ||
		fail "opaque round trip: content differs"
else
	fail "decrypt (exit $RC): $(head -c 300 "$ERR")"
fi

# Negative control: a detached signature, one word changed after decryption.
run_p11smime --pin-source "file:$PIN_FILE" sign --signer rsa2048@example.org -i "$T/rsa.eml" \
	-o "$T/ctl.signed"
run_p11smime encrypt --recipient rsa2048@example.org -i "$T/ctl.signed" -o "$T/ctl.enc"
run_p11smime --pin-source "file:$PIN_FILE" decrypt -i "$T/ctl.enc" -o "$T/ctl.dec"
assert_exit 0 "control: decrypt"
sed 's/plain part/plain pArt/' "$T/ctl.dec" >"$T/ctl.bad"
cmp -s "$T/ctl.dec" "$T/ctl.bad" && fail "control: nothing was changed"
run_p11smime --json verify --trust "$CA_PEM" -i "$T/ctl.bad" -o "$T/ctl.out"
assert_exit 1 "control: the altered message is not good"
assert_json "$OUT" '.verdict == "bad-signature"'
assert_file_absent "$T/ctl.out"

finish
