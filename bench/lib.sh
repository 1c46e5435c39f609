# Shared by the bench scripts (sourced).
#
#   bench_issue_certs WORK TOKEN_DIR N
#       N S/MIME certificates from the token's test CA, for four software
#       keys (two RSA-2048, two P-256; the token's own keys are slow to make
#       by the hundred), DER, in WORK/certs/; the certificates are what a
#       listing has to walk.
#   bench_import WORK MODULE CERT.der...
#       put certificates on the token of $P11S_TOKEN_LABEL in one process
#       (bench/import_certs.c, compiled into WORK on first use;
#       pkcs11-tool --write-object would take a minute for 500).

bench_issue_certs() {
	local work=$1 tok=$2 n=$3 k i ku
	mkdir -p "$work/certs"
	for k in 0 1 2 3; do
		case $k in
		0 | 1) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/k$k.pem" 2>/dev/null ;;
		*) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/k$k.pem" 2>/dev/null ;;
		esac
		openssl req -new -key "$work/k$k.pem" -subj "/CN=bench key $k" -out "$work/r$k.pem" -config /dev/null
	done
	for i in $(seq 1 "$n"); do
		k=$((i % 4))
		case $k in 0 | 1) ku="digitalSignature, keyEncipherment" ;; *) ku="digitalSignature, keyAgreement" ;; esac
		printf '[e]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,%s\nextendedKeyUsage=emailProtection\nsubjectAltName=email:user%d@example.org\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' \
			"$ku" "$i" >"$work/ext"
		openssl x509 -req -in "$work/r$k.pem" -CA "$tok/ca/ca.pem" -CAkey "$tok/ca/ca.key" \
			-set_serial "$((100000 + i))" -subj "/CN=bench user $i/emailAddress=user$i@example.org" \
			-days 1096 -extfile "$work/ext" -extensions e -outform DER \
			-out "$work/certs/user$(printf %04d "$i").der" 2>/dev/null
	done
}

bench_import() {
	local work=$1 module=$2
	shift 2
	[ -x "$work/import_certs" ] ||
		cc -O2 -I/usr/include/p11-kit-1 -o "$work/import_certs" \
			"$(dirname "${BASH_SOURCE[0]}")/import_certs.c" -ldl -lcrypto
	"$work/import_certs" "$module" "$P11S_TOKEN_LABEL" "$P11S_PIN_FILE" "$@"
}
