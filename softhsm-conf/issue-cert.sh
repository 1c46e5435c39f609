#!/usr/bin/env bash
# Issue an X.509 certificate from the throwaway test CA made by provision.sh.
# Used by provision.sh and by tests/integration/lib.sh (ca_issue).
#
#   issue-cert.sh --ca-dir DIR --key SPEC --out PEM [options]
#
#   --ca-dir DIR     holds ca.pem and ca.key
#   --key SPEC       token:ID   a key on the SoftHSM token named by $SOFTHSM2_CONF
#                               (ID in hex); the request is signed on the token
#                               through libp11's OpenSSL engine, so the key
#                               never leaves it.  Needs $P11S_PIN_FILE.
#                    key:FILE   a software private key (PEM)
#                    pub:FILE   a bare public key (PEM); only with the default
#                               validity start (now), as OpenSSL 3.0 cannot
#                               backdate a certificate for a key it cannot use
#   --out PEM        where the certificate goes
#   --profile P      smime-rsa | smime-ec | smime-any (KU from the key type) |
#                    FILE (an openssl extension file; section [ext]; default
#                    smime-any)
#   --email ADDR     SAN rfc822Name and subject emailAddress (default test@example.org)
#   --cn NAME        subject CN (default: the e-mail address)
#   --subject DN     whole subject, /CN=../O=.. (overrides --cn/--email in the DN)
#   --start TIME     notBefore, YYYYMMDDHHMMSSZ (default: now - 1 day)
#   --end TIME       notAfter, YYYYMMDDHHMMSSZ (default: start + --days)
#   --days N         validity length (default 1096, about 3 years)
#   --serial HEX     serial number (default: random 64 bits)
#   --no-email-dn    keep emailAddress out of the subject
set -euo pipefail

die() {
	echo "issue-cert.sh: $*" >&2
	exit 1
}

ca_dir='' key='' out='' profile=smime-any email=test@example.org cn='' subject='' start='' end='' days=1096
serial='' email_dn=1
while [ $# -gt 0 ]; do
	case "$1" in
	--ca-dir) ca_dir=$2; shift 2 ;;
	--key) key=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--profile) profile=$2; shift 2 ;;
	--email) email=$2; shift 2 ;;
	--cn) cn=$2; shift 2 ;;
	--subject) subject=$2; shift 2 ;;
	--start) start=$2; shift 2 ;;
	--end) end=$2; shift 2 ;;
	--days) days=$2; shift 2 ;;
	--serial) serial=$2; shift 2 ;;
	--no-email-dn) email_dn=0; shift ;;
	*) die "unknown option $1" ;;
	esac
done
[ -n "$ca_dir" ] && [ -f "$ca_dir/ca.pem" ] && [ -f "$ca_dir/ca.key" ] || die "--ca-dir must hold ca.pem and ca.key"
[ -n "$key" ] || die "--key is required"
[ -n "$out" ] || die "--out is required"
[ -n "$serial" ] || serial=$(openssl rand -hex 8 | sed 's/^[89a-f]/7/')
[ -n "$cn" ] || cn=$email
if [ -z "$subject" ]; then
	subject="/CN=$cn"
	[ "$email_dn" = 1 ] && subject="$subject/emailAddress=$email"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/p11s-issue.XXXXXX")
trap 'rm -rf "$work"' EXIT
module=${P11S_SOFTHSM_MODULE:-/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so}

# A request carrying the subject and the public key.  For a token key the
# request is signed on the token, which lets `openssl ca` (the only OpenSSL
# 3.0 command that sets arbitrary validity dates) issue for it.
pub_only=
keyalg=
case "$key" in
token:*)
	id=${key#token:}
	[ -n "${SOFTHSM2_CONF:-}" ] || die "token:$id needs SOFTHSM2_CONF"
	pin=$(head -n1 "${P11S_PIN_FILE:?token:$id needs P11S_PIN_FILE}")
	label=${P11S_TOKEN_LABEL:-p11smime-test}
	cat >"$work/engine.cnf" <<-EOF
		openssl_conf = oc
		[oc]
		engines = es
		[es]
		pkcs11 = p11
		[p11]
		engine_id = pkcs11
		MODULE_PATH = $module
		init = 0
		[req]
		distinguished_name = dn
		[dn]
	EOF
	pctid=$(echo "$id" | sed 's/../%&/g')
	OPENSSL_CONF=$work/engine.cnf openssl req -new -engine pkcs11 -keyform engine \
		-key "pkcs11:token=$label;id=$pctid;type=private;pin-value=$pin" \
		-subj "$subject" -out "$work/req.pem" >/dev/null 2>"$work/err" ||
		{ cat "$work/err" >&2; die "could not make a request with token key $id"; }
	;;
key:*)
	openssl req -new -key "${key#key:}" -subj "$subject" -out "$work/req.pem" -config /dev/null 2>"$work/err" ||
		{ cat "$work/err" >&2; die "could not make a request with ${key#key:}"; }
	;;
pub:*)
	pub_only=${key#pub:}
	[ -z "$start" ] && [ -z "$end" ] || die "pub: keys take only --days (OpenSSL 3.0 cannot backdate them); use token: or key:"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/throwaway.key" 2>/dev/null
	openssl req -new -key "$work/throwaway.key" -subj "$subject" -out "$work/req.pem" -config /dev/null
	;;
*) die "--key must be token:ID, key:FILE or pub:FILE" ;;
esac
if [ -n "$pub_only" ]; then
	keyalg=$(openssl pkey -pubin -in "$pub_only" -noout -text | head -n1)
else
	keyalg=$(openssl req -in "$work/req.pem" -noout -text | grep -m1 'Public Key Algorithm')
fi

case "$profile" in
smime-any) case "$keyalg" in *rsa* | *RSA*) profile=smime-rsa ;; *) profile=smime-ec ;; esac ;;
esac
case "$profile" in
smime-rsa) ku="digitalSignature, keyEncipherment" ;;
smime-ec) ku="digitalSignature, keyAgreement" ;;
*) [ -f "$profile" ] || die "profile $profile: not smime-rsa/smime-ec/smime-any nor a file" ;;
esac
if [ -f "$profile" ]; then
	cp "$profile" "$work/ext.cnf"
else
	cat >"$work/ext.cnf" <<-EOF
		[ext]
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, $ku
		extendedKeyUsage = emailProtection
		subjectAltName = email:$email
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	EOF
fi

if [ -n "$pub_only" ]; then
	openssl x509 -req -in "$work/req.pem" -force_pubkey "$pub_only" -CA "$ca_dir/ca.pem" \
		-CAkey "$ca_dir/ca.key" -set_serial "0x$serial" -days "$days" -sha256 \
		-extfile "$work/ext.cnf" -extensions ext -out "$out" 2>"$work/err" ||
		{ cat "$work/err" >&2; die "openssl x509 failed"; }
	exit 0
fi

[ -n "$start" ] || start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
if [ -z "$end" ]; then
	s=${start%Z}
	s_epoch=$(date -u -d "${s:0:8} ${s:8:2}:${s:10:2}:${s:12:2}" +%s)
	end=$(date -u -d "@$((s_epoch + days * 86400))" +%Y%m%d%H%M%SZ)
fi
mkdir "$work/db"
: >"$work/db/index.txt"
echo "$serial" >"$work/db/serial"
cat >"$work/ca.cnf" <<-EOF
	[ca]
	default_ca = testca
	[testca]
	database = $work/db/index.txt
	new_certs_dir = $work/db
	serial = $work/db/serial
	default_md = sha256
	policy = anything
	unique_subject = no
	email_in_dn = yes
	preserve = yes
	copy_extensions = none
	[anything]
	commonName = optional
	emailAddress = optional
	organizationName = optional
	organizationalUnitName = optional
	countryName = optional
EOF
openssl ca -batch -config "$work/ca.cnf" -cert "$ca_dir/ca.pem" -keyfile "$ca_dir/ca.key" \
	-in "$work/req.pem" -out "$work/cert.pem" -notext -startdate "$start" -enddate "$end" \
	-extfile "$work/ext.cnf" -extensions ext >"$work/err" 2>&1 ||
	{ cat "$work/err" >&2; die "openssl ca failed"; }
openssl x509 -in "$work/cert.pem" -out "$out"
