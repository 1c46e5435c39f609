# shellcheck shell=bash
# Interop helpers for tests/integration/test_*.sh: other S/MIME stacks
# (OpenSSL's cms app, GnuPG's gpgsm, NSS's cmsutil) set up in throwaway
# homes, plus the pkcs11-spy wrapper.  Source it after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/interop.sh"
#
# Everything lives under $TEST_TMP and is removed with it; a gpg-agent
# started for a throwaway GNUPGHOME is stopped on exit.
#
# gpgsm
#   gpgsm_setup CA_PEM...     make a fresh GNUPGHOME (exported) that trusts
#                             each CA for S/MIME; CRL and OCSP checks off
#   gpgsm_import_p12 P12 PASS import a PKCS#12 (key and certificate)
#   gpgsm_verify SIG [CONTENT] verify a CMS signature (DER or PEM; detached
#                             when CONTENT is given); status 0 only when
#                             good and trusted.  Output in $TEST_TMP/gpgsm.log
# NSS
#   nss_setup CA_PEM...       make a fresh NSS db (NSS_DB, "sql:DIR",
#                             exported, empty password) trusting each CA
#                             for e-mail
#   nss_import_p12 P12 PASS   import a PKCS#12
#   nss_verify SIG [CONTENT]  cmsutil -D: status 0 only when every signer
#                             verified with a trusted chain.  Output in
#                             $TEST_TMP/cmsutil.log; decoded content (opaque)
#                             in $TEST_TMP/cmsutil.out
# OpenSSL
#   openssl_verify SIG CONTENT|- CA_PEM   openssl cms -verify of a DER
#                             signature against CONTENT (binary, as is) or
#                             the content it carries (-); content written
#                             to $TEST_TMP/openssl.out
#   smime_signature MSG OUT_DER   the CMS of a signed S/MIME message (detached
#                             or opaque), DER
#   make_p12 KEY CERT OUT PASS    a PKCS#12 that gpgsm and NSS both read
# Content
#   canonical_entity MSG OUT  the entity a signature over MSG must cover when
#                             MSG is 7-bit: its Content-* fields (with their
#                             continuation lines), a blank line and the body,
#                             every line end CRLF
#   crlf FILE OUT / lf FILE OUT    convert line ends
#   flip_byte FILE OFFSET     change one byte (a negative control)
# pkcs11-spy
#   spy_on                    route P11SMIME_MODULE through OpenSC's
#                             pkcs11-spy (log: $SPY_LOG; LeakSanitizer off,
#                             the spy leaks); spy_off undoes it
#   spy_count REGEX           lines of $SPY_LOG matching (grep -E)

PKCS11_SPY=${PKCS11_SPY:-/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so}

_interop_cleanup() {
	if [ -n "${GNUPGHOME:-}" ] && [ -d "$GNUPGHOME" ]; then
		gpgconf --kill all >/dev/null 2>&1 || true
	fi
}
# Chain onto lib.sh's exit trap, keeping the status it reports.
trap '_i_rc=$?; _interop_cleanup; (exit $_i_rc); _t_on_exit' EXIT

# ------------------------------------------------------------------ gpgsm

gpgsm_setup() {
	_interop_cleanup
	GNUPGHOME=$(mktemp -d "$TEST_TMP/gnupg.XXXXXX")
	export GNUPGHOME
	chmod 700 "$GNUPGHOME"
	cat >"$GNUPGHOME/gpgsm.conf" <<EOF
disable-crl-checks
disable-policy-checks
disable-dirmngr
EOF
	echo "allow-loopback-pinentry" >"$GNUPGHOME/gpg-agent.conf"
	local ca fpr
	for ca in "$@"; do
		gpgsm --batch --import "$ca" >"$TEST_TMP/gpgsm.log" 2>&1 ||
			{ cat "$TEST_TMP/gpgsm.log"; echo "gpgsm_setup: cannot import $ca" >&2; return 1; }
		fpr=$(openssl x509 -in "$ca" -noout -fingerprint -sha1 | sed 's/.*=//')
		echo "$fpr S" >>"$GNUPGHOME/trustlist.txt"
	done
}

gpgsm_import_p12() { # P12 PASS
	# gpgsm 2.2's PKCS#12 reader misreads about 1 file in 100 depending on
	# the random salt ('data error at "shrouded_key_bag.decrypted-text"').
	# That is gpgsm's bug, not the file's: wrap the same key and
	# certificate again with a fresh salt, up to three times.
	local try p12=$1
	for try in 1 2 3; do
		if gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --import "$p12" \
			<<<"$2" >"$TEST_TMP/gpgsm.log" 2>&1 &&
			! grep -q 'error at "' "$TEST_TMP/gpgsm.log"; then
			return 0
		fi
		grep -q 'error at "' "$TEST_TMP/gpgsm.log" || break
		openssl pkcs12 -in "$1" -passin "pass:$2" -nodes -out "$TEST_TMP/rewrap.pem" \
			2>/dev/null &&
			openssl pkcs12 -export -in "$TEST_TMP/rewrap.pem" -out "$TEST_TMP/rewrapped.p12" \
				-passout "pass:$2" -certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES \
				-macalg sha1 2>/dev/null || break
		rm -f "$TEST_TMP/rewrap.pem"
		p12=$TEST_TMP/rewrapped.p12
	done
	cat "$TEST_TMP/gpgsm.log"
	echo "gpgsm_import_p12: cannot import $1" >&2
	return 1
}

gpgsm_verify() { # SIG [CONTENT]
	: "${GNUPGHOME:?call gpgsm_setup first}"
	local args=(--batch --status-fd 1 --verify "$1")
	[ $# -ge 2 ] && args+=("$2")
	gpgsm "${args[@]}" >"$TEST_TMP/gpgsm.log" 2>&1 || return 1
	# gpgsm exits 0 on some untrusted chains; insist on a good, valid signature.
	grep -q '^\[GNUPG:\] GOODSIG' "$TEST_TMP/gpgsm.log" &&
		grep -q '^\[GNUPG:\] VALIDSIG' "$TEST_TMP/gpgsm.log" &&
		grep -q "^\[GNUPG:\] TRUST_FULLY" "$TEST_TMP/gpgsm.log" &&
		! grep -qE '^\[GNUPG:\] (BADSIG|ERRSIG|TRUST_NEVER|TRUST_UNDEFINED)' "$TEST_TMP/gpgsm.log"
}

# -------------------------------------------------------------------- NSS

nss_setup() {
	local dir ca n=0
	dir=$(mktemp -d "$TEST_TMP/nss.XXXXXX")
	NSS_DB=sql:$dir
	export NSS_DB
	certutil -N -d "$NSS_DB" --empty-password >"$TEST_TMP/certutil.log" 2>&1 ||
		{ cat "$TEST_TMP/certutil.log"; return 1; }
	for ca in "$@"; do
		n=$((n + 1))
		certutil -A -d "$NSS_DB" -n "test-ca-$n" -t "C,C,C" -i "$ca" >"$TEST_TMP/certutil.log" 2>&1 ||
			{ cat "$TEST_TMP/certutil.log"; echo "nss_setup: cannot add $ca" >&2; return 1; }
	done
}

nss_import_p12() { # P12 PASS
	: "${NSS_DB:?call nss_setup first}"
	pk12util -i "$1" -d "$NSS_DB" -W "$2" -K "" >"$TEST_TMP/pk12util.log" 2>&1 ||
		{ cat "$TEST_TMP/pk12util.log"; echo "nss_import_p12: cannot import $1" >&2; return 1; }
}

nss_verify() { # SIG [CONTENT]
	: "${NSS_DB:?call nss_setup first}"
	local args=(-D -d "$NSS_DB" -i "$1" -u 4)
	[ $# -ge 2 ] && args+=(-c "$2")
	# Without -h, cmsutil fails on a bad signer; with -h it reports every
	# signer's status (and exits 0 whatever they are): insist on both.
	cmsutil "${args[@]}" -o "$TEST_TMP/cmsutil.out" >"$TEST_TMP/cmsutil.log" 2>&1 || return 1
	cmsutil "${args[@]}" -h 0 -o "$TEST_TMP/cmsutil.hdr" >>"$TEST_TMP/cmsutil.log" 2>&1 || return 1
	grep -q 'signer0.status=GoodSignature' "$TEST_TMP/cmsutil.hdr" &&
		! grep -E 'signer[0-9]+.status=' "$TEST_TMP/cmsutil.hdr" | grep -qv 'status=GoodSignature'
}

# ---------------------------------------------------------------- OpenSSL

openssl_verify() { # SIG CONTENT|- CA_PEM
	local args=(cms -verify -binary -inform DER -in "$1" -CAfile "$3" -out "$TEST_TMP/openssl.out")
	[ "$2" != - ] && args+=(-content "$2")
	openssl "${args[@]}" >"$TEST_TMP/openssl.log" 2>&1
}

smime_signature() { # MSG OUT_DER
	openssl cms -cmsout -in "$1" -outform DER -out "$2" 2>"$TEST_TMP/openssl.log"
}

make_p12() { # KEY CERT OUT PASS: PBES with 3DES and a SHA-1 MAC, which gpgsm and NSS read
	openssl pkcs12 -export -inkey "$1" -in "$2" -out "$3" -passout "pass:$4" \
		-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1 2>"$TEST_TMP/openssl.log"
}

# ---------------------------------------------------------------- content

canonical_entity() { # MSG OUT
	perl -e '
		local $/; my $m = <STDIN>;
		my ($h, $b) = $m =~ /\A(.*?\r?\n)\r?\n(.*)\z/s or die "no header block\n";
		my @f; for my $l (split /(?<=\n)/, $h) {
			if ($l =~ /^[ \t]/) { $f[-1] .= $l if @f; } else { push @f, $l; }
		}
		my $out = join "", grep { /^Content-/i } @f;
		$out .= "\n" . $b;
		$out =~ s/\r*\n/\r\n/g;
		print $out;' <"$1" >"$2"
}

crlf() { perl -pe 's/\r*\n/\r\n/' <"$1" >"$2"; }
lf() { perl -pe 's/\r\n/\n/' <"$1" >"$2"; }

flip_byte() { # FILE OFFSET
	local off=$2 b
	b=$(od -An -tu1 -j "$off" -N1 "$1" | tr -d ' ')
	printf "$(printf '\\%03o' $(((b ^ 1) & 255)))" |
		dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

# ------------------------------------------------------------ pkcs11-spy

spy_on() {
	[ -f "$PKCS11_SPY" ] || { echo "spy_on: $PKCS11_SPY not found" >&2; return 1; }
	SPY_LOG=$(mktemp "$TEST_TMP/spy.XXXXXX.log")
	export SPY_LOG
	export PKCS11SPY=${P11SMIME_MODULE:-$SOFTHSM_MODULE}
	export PKCS11SPY_OUTPUT=$SPY_LOG
	export P11SMIME_MODULE=$PKCS11_SPY
	# pkcs11-spy leaks, and once unloaded its frames cannot be named for
	# tests/lsan.supp: no leak check while it is in the way.
	_SPY_ASAN=${ASAN_OPTIONS-}
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
}

spy_off() {
	export P11SMIME_MODULE=$PKCS11SPY
	export ASAN_OPTIONS=$_SPY_ASAN
	unset PKCS11SPY PKCS11SPY_OUTPUT
}

spy_count() {
	local n
	n=$(grep -cE -- "$1" "$SPY_LOG" 2>/dev/null) || true
	echo "${n:-0}"
}
