#!/usr/bin/env bash
# Provision a SoftHSM2 token directory for p11smime's demo and tests.
#
#   softhsm-conf/provision.sh DIR
#
# DIR must be absent, empty, or a directory this script made before (it is
# then wiped).  Afterwards DIR holds:
#   softhsm2.conf   tokendir = DIR/tokens (file backend, log level ERROR)
#   tokens/         one token labelled p11smime-test, user PIN in DIR/pin,
#                   SO PIN 12345678, with four key pairs generated ON the token
#                   (private halves private, sensitive, never extractable):
#                     id 01 rsa2048, id 02 rsa3072, id 03 p256, id 04 p384
#                   and for each an S/MIME certificate (same CKA_ID and label)
#   ca/ca.pem, ca/ca.key   the throwaway test CA (software key)
#   certs/NAME.pem  each certificate; SAN email NAME@example.org
#   mock/key.pem, mock/cert.pem  a software RSA key pair for tests/mock
#   env             source it: SOFTHSM2_CONF, P11S_PIN_FILE,
#                   P11S_SOFTHSM_MODULE, P11S_TOKEN_LABEL
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module=${P11S_SOFTHSM_MODULE:-/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so}
label=p11smime-test
user_pin=123456
so_pin=12345678
marker=.p11smime-provisioned

die() {
	echo "provision.sh: $*" >&2
	exit 1
}
trap 'echo "provision.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

[ $# = 1 ] || die "usage: provision.sh DIR"
for tool in softhsm2-util pkcs11-tool openssl; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ -f "$module" ] || die "SoftHSM module $module not found (apt-get install softhsm2)"
[ -f /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] ||
	die "libp11's OpenSSL engine is missing (apt-get install libengine-pkcs11-openssl)"

dir=$1
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
	[ -f "$dir/$marker" ] ||
		die "$dir is not empty and was not made by provision.sh; refusing to touch it"
	rm -rf "${dir:?}"/* "$dir"/.[!.]*
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
: >"$dir/$marker"
mkdir "$dir/tokens" "$dir/ca" "$dir/certs"
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" >"$dir/softhsm2.conf"
printf '%s\n' "$user_pin" >"$dir/pin"
chmod 600 "$dir/pin"
cat >"$dir/env" <<EOF
export SOFTHSM2_CONF='$dir/softhsm2.conf'
export P11S_PIN_FILE='$dir/pin'
export P11S_SOFTHSM_MODULE='$module'
export P11S_TOKEN_LABEL='$label'
EOF
export SOFTHSM2_CONF=$dir/softhsm2.conf P11S_PIN_FILE=$dir/pin P11S_SOFTHSM_MODULE=$module
export P11S_TOKEN_LABEL=$label

softhsm2-util --init-token --free --label "$label" --pin "$user_pin" --so-pin "$so_pin" >/dev/null

p11() {
	pkcs11-tool --module "$module" --token-label "$label" --login --pin "$user_pin" "$@"
}

# The test CA: a software key is fine, it only has to sign.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.pem" \
	-subj "/O=p11smime tests/CN=p11smime throwaway test CA" -days 3653 -sha256 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-addext "subjectKeyIdentifier=hash" 2>/dev/null
chmod 600 "$dir/ca/ca.key"

# id name key-type usage
keys=(
	"01 rsa2048 rsa:2048 --usage-sign --usage-decrypt"
	"02 rsa3072 rsa:3072 --usage-sign --usage-decrypt"
	"03 p256 EC:prime256v1 --usage-sign --usage-derive"
	"04 p384 EC:secp384r1 --usage-sign --usage-derive"
)
for k in "${keys[@]}"; do
	read -r id name type usage <<<"$k"
	# --sensitive sets CKA_SENSITIVE; pkcs11-tool leaves CKA_EXTRACTABLE unset
	# unless --extractable, and SoftHSM's default for it is false (checked
	# below and by tests/integration/test_provision.sh).
	# shellcheck disable=SC2086
	p11 --keypairgen --key-type "$type" --id "$id" --label "$name" $usage --sensitive \
		>"$dir/keygen.log" 2>&1 || { cat "$dir/keygen.log" >&2; die "key generation $name failed"; }
	grep -q "never extractable" "$dir/keygen.log" || die "key $name is extractable"
	case "$type" in rsa*) profile=smime-rsa ;; *) profile=smime-ec ;; esac
	"$here/issue-cert.sh" --ca-dir "$dir/ca" --key "token:$id" --out "$dir/certs/$name.pem" \
		--profile "$profile" --email "$name@example.org" --cn "p11smime test $name"
	openssl x509 -in "$dir/certs/$name.pem" -outform DER -out "$dir/certs/$name.der"
	p11 --write-object "$dir/certs/$name.der" --type cert --id "$id" --label "$name" >/dev/null
	rm -f "$dir/certs/$name.der"
done
rm -f "$dir/keygen.log"

# For tests/mock: a software RSA key and its certificate, which the mock
# module serves as its one key pair (it needs the key in a file).
mkdir "$dir/mock"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/mock/key.pem" 2>/dev/null
"$here/issue-cert.sh" --ca-dir "$dir/ca" --key "key:$dir/mock/key.pem" --out "$dir/mock/cert.pem" \
	--profile smime-rsa --email mock@example.org --cn "p11smime mock key"

n=$(pkcs11-tool --module "$module" --token-label "$label" --list-objects --type cert 2>/dev/null |
	grep -c '^Certificate Object')
[ "$n" = 4 ] || die "expected 4 certificates on the token, found $n"
echo "provisioned token '$label' in $dir"
