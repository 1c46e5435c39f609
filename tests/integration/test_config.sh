#!/usr/bin/env bash
# The user config file: $XDG_CONFIG_HOME/p11smime/config (else
# ~/.config/p11smime/config) gives defaults; the command line wins; a
# malformed line is a usage error naming the file and the line.
. "$(dirname "$0")/lib.sh"

new_token
T=$TEST_TMP
export XDG_CONFIG_HOME=$T/xdg
CFG=$XDG_CONFIG_HOME/p11smime/config
mkdir -p "$(dirname "$CFG")"
printf 'From: rsa2048@example.org\nTo: rsa2048@example.org\nSubject: c\n\nhello\n' >"$T/msg.eml"

# module (with P11SMIME_MODULE unset), pin-source and signer from the file.
cat >"$CFG" <<CFG
# p11smime defaults
module = $SOFTHSM_MODULE
pin-source = file:$PIN_FILE

signer=p256@example.org
  digest =   sha384  
cipher = aes-256-cbc
CFG
(
	unset P11SMIME_MODULE
	run_p11smime --json sign -i "$T/msg.eml" -o "$T/signed.eml"
	assert_exit 0 "sign with module, pin-source, signer and digest from the config file"
	assert_json "$OUT" '.subject | test("p256")' "the config's signer"
	assert_json "$OUT" '.digest == "sha384"' "the config's digest"
)
# The command line wins.
run_p11smime --json sign --signer rsa2048@example.org --digest sha512 -i "$T/msg.eml" -o "$T/s2.eml"
assert_exit 0 "--signer and --digest on the command line"
assert_json "$OUT" '.subject | test("rsa2048")' "--signer wins over the config"
assert_json "$OUT" '.digest == "sha512"' "--digest wins over the config"
echo 000000 >"$T/badpin"
run_p11smime --pin-source "file:$T/badpin" sign -i "$T/msg.eml" -o "$T/s3.eml"
assert_exit 3 "--pin-source on the command line wins (a wrong PIN there fails)"
# P11SMIME_MODULE wins over the file's module.
P11SMIME_MODULE=$T/no-such-module.so run_p11smime sign -i "$T/msg.eml" -o "$T/s4.eml"
assert_exit 3 "\$P11SMIME_MODULE wins over the config's module"
# The cipher default.
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" -i "$T/msg.eml" -o "$T/enc.eml"
assert_exit 0 "encrypt with the config's cipher"
assert_contains "$T/enc.eml" "smime-type=enveloped-data"
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" --cipher aes-256-gcm -i "$T/msg.eml" \
	-o "$T/enc2.eml"
assert_contains "$T/enc2.eml" "smime-type=authEnveloped-data"

# HOME is used when XDG_CONFIG_HOME is unset.
mkdir -p "$T/home/.config/p11smime"
printf 'cipher = aes-128-cbc\n' >"$T/home/.config/p11smime/config"
(
	unset XDG_CONFIG_HOME
	HOME=$T/home run_p11smime --json encrypt --recipient "$CERTS_DIR/rsa2048.pem" \
		-i "$T/msg.eml" -o "$T/enc3.eml"
	assert_exit 0 "~/.config/p11smime/config without XDG_CONFIG_HOME"
	assert_json "$OUT" '.cipher == "aes-128-cbc"' "the cipher from ~/.config"
)

# Malformed files: exit 2, the file and line named, nothing done.
bad() { # LINE-CONTENT EXPECTED-TEXT
	printf '# comment\n%s\n' "$1" >"$CFG"
	run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" -i "$T/msg.eml" -o "$T/bad.eml"
	assert_exit 2 "malformed: $1"
	assert_contains "$ERR" "$CFG:2:"
	assert_contains "$ERR" "$2"
	assert_file_absent "$T/bad.eml"
}
bad "signer" "expected 'option = value'"
bad "colour = blue" "unknown option 'colour'"
bad "cipher = des" "unknown cipher"
bad "digest = md5" "unknown digest"
bad "signer =" "has no value"
bad "pin-source = paper:1234" "PIN source"
assert_not_contains "$ERR" "1234"
printf 'cipher = aes-256-cbc\ncipher = aes-128-cbc\n' >"$CFG"
run_p11smime tokens
assert_exit 2 "an option set twice"
assert_contains "$ERR" "$CFG:2: 'cipher' is set a second time"
# A directory in its place cannot be read: said, not ignored.
rm -f "$CFG"
mkdir "$CFG"
run_p11smime tokens
assert_exit 4 "an unreadable config file"
assert_contains "$ERR" "config file"
rmdir "$CFG"
# No file at all is fine.
run_p11smime encrypt --recipient "$CERTS_DIR/rsa2048.pem" -i "$T/msg.eml" -o "$T/ok.eml"
assert_exit 0 "no config file"
finish
