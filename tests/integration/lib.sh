# shellcheck shell=bash
# Shared helpers for tests/integration/test_*.sh.  Source it first:
#
#   . "$(dirname "$0")/lib.sh"
#
# Environment (set by ctest; see tests/CMakeLists.txt):
#   P11SMIME          the p11smime binary
#   P11S_TEMPLATE     a SoftHSM token dir provisioned by softhsm-conf/provision.sh
#   P11S_MOCK_MODULE  the fault-injecting PKCS#11 module (tests/mock)
#   P11S_SRCDIR, P11S_BUILDDIR
# Optional: P11S_KEEP_TMP=1 keeps the temp dirs; P11S_TIMEOUT (default 60 s)
# bounds every run_p11smime.
#
# Tokens
#   new_token             copy the template into a fresh temp dir (removed on
#                         exit) and export SOFTHSM2_CONF, P11SMIME_MODULE (the
#                         SoftHSM module, not the proxy), TOKEN_DIR, PIN_FILE,
#                         PIN (the user PIN), SO_PIN, TOKEN_LABEL, CA_PEM, CA_KEY,
#                         CERTS_DIR, SOFTHSM_MODULE.  Each call makes a new token.
#   mock_token [FLAGS]    point P11SMIME_MODULE at the mock module with
#                         P11S_MOCK_FLAGS=FLAGS (comma list, see tests/mock),
#                         a fresh P11S_MOCK_LOG, P11S_MOCK_PIN=$PIN and the
#                         software RSA pair $TOKEN_DIR/mock/{key,cert}.pem
#                         (CA-issued, mock@example.org).  Calls new_token first
#                         if no token dir exists yet.
#   mock_log_count REGEX  how many lines of $P11S_MOCK_LOG match (grep -E), e.g.
#                         mock_log_count '^C_Login '
#   mock_log_reset        empty the log
#   token_keygen TYPE ID LABEL [--extractable]
#                         generate a key pair on the current token; TYPE as in
#                         pkcs11-tool --key-type (rsa:2048, EC:prime256v1).  Keys
#                         are sensitive and, unless --extractable, not extractable.
#   token_pubkey ID OUT_PEM        export the public key with CKA_ID ID (hex)
#   token_import_cert PEM ID LABEL put a certificate on the token
#   token_import_key PEM ID LABEL  put a software private key on the token
#   token_delete TYPE ID           delete objects (cert, privkey, pubkey) with ID
#   ca_issue KEY OUT_PEM [PROFILE] [OPTIONS]
#                         issue a certificate from the token dir's test CA
#                         (softhsm-conf/issue-cert.sh).  KEY: token:ID (a key on
#                         the current token; the request is signed there),
#                         key:FILE (software private key) or a public key PEM
#                         (pub:FILE or FILE; validity then starts now).
#                         PROFILE: smime-any (default: KU from the key type),
#                         smime-rsa (digitalSignature+keyEncipherment), smime-ec
#                         (digitalSignature+keyAgreement), or an openssl
#                         extension file with an [ext] section for anything
#                         else.  OPTIONS: --days N, --start/--end YYYYMMDDHHMMSSZ
#                         (expired, not yet valid), --serial HEX, --email ADDR
#                         (default $SAN_EMAIL or test@example.org), --cn NAME,
#                         --subject DN, --no-email-dn.
#   p11tool_token ARGS... pkcs11-tool with --module/--login/--pin for the token
#
# Running the tool
#   run_p11smime ARGS...  runs "$P11SMIME" ARGS with stdin from /dev/null (or
#                         from $RUN_STDIN if set), no controlling terminal, under
#                         timeout; sets RC, OUT (stdout file), ERR (stderr file),
#                         and the strings STDOUT and STDERR.  RC 124 = timed out.
#                         Redirections on the call (5<file) reach the tool.
#
# Assertions (each counts one pass or one fail; failures print why)
#   assert_exit N [MSG]              $RC == N
#   assert_contains FILE TEXT        FILE holds TEXT (fixed string)
#   assert_not_contains FILE TEXT
#   assert_matches [-i] FILE REGEX   grep -E (-i: ignoring case)
#   assert_eq EXPECTED ACTUAL MSG
#   assert_file_absent PATH / assert_file_present PATH
#   assert_json FILE JQ_FILTER [MSG] jq -e FILTER holds on FILE
#   pass MSG / fail MSG
#   at_exit CMD...                   run CMD when the script ends (e.g. stop
#                                    the daemons a bed started)
#   unwind_modules                   full stacks for LeakSanitizer, for tests
#                                    that load every module p11-kit knows
#   finish                           print "N passed, N failed" and exit (also
#                                    done automatically on exit; a script that
#                                    asserted nothing fails)

set -u -o pipefail

: "${P11SMIME:?P11SMIME (the p11smime binary) is not set}"
: "${P11S_TEMPLATE:?P11S_TEMPLATE (the provisioned token template) is not set}"
P11S_SRCDIR=${P11S_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SOFTHSM_MODULE=${P11S_SOFTHSM_MODULE:-/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so}
export SOFTHSM_MODULE

_T_PASSED=0
_T_FAILED=0
_T_FINISHED=0
_T_NAME=$(basename "$0" .sh)
TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/p11s-${_T_NAME}.XXXXXX")
export TEST_TMP

# Modules that p11-kit loads for a --trust/--ca pkcs11: search are unloaded
# before LeakSanitizer reports, and their frames (no frame pointers) stop
# the fast unwinder: only full unwinding reaches p11-kit's frames, which
# tests/lsan.supp names.  tpm2-pkcs11, registered system-wide, leaks when
# no TPM answers.  Slower: only for the tests that need it.
unwind_modules() { export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:fast_unwind_on_malloc=0"; }

_T_AT_EXIT=()
# at_exit CMD...: run CMD when the script ends (daemons a test started).
at_exit() { _T_AT_EXIT+=("$*"); }

_t_on_exit() {
	local rc=$? c
	for c in "${_T_AT_EXIT[@]}"; do eval "$c" || true; done
	if [ "$_T_FINISHED" = 0 ]; then
		if [ $rc -ne 0 ] && [ $_T_FAILED = 0 ]; then
			echo "FAIL: script stopped early with status $rc (line ${_T_LAST_LINE:-?})"
			_T_FAILED=$((_T_FAILED + 1))
		fi
		if [ $((_T_PASSED + _T_FAILED)) = 0 ]; then
			echo "FAIL: no assertion ran"
			_T_FAILED=1
		fi
		echo "$_T_PASSED passed, $_T_FAILED failed"
	fi
	if [ "${P11S_KEEP_TMP:-0}" = 1 ]; then
		echo "(kept $TEST_TMP)"
	else
		rm -rf "$TEST_TMP"
	fi
	if [ $_T_FAILED -gt 0 ]; then
		exit 1
	fi
	exit $rc
}
trap _t_on_exit EXIT
trap '_T_LAST_LINE=$LINENO' ERR

# ------------------------------------------------------------- assertions

pass() {
	_T_PASSED=$((_T_PASSED + 1))
	echo "ok: $*"
}

fail() {
	_T_FAILED=$((_T_FAILED + 1))
	echo "FAIL: $*"
}

_t_show() { # FILE LABEL: print a file indented, cut short
	[ -f "$1" ] || return 0
	echo "  --- $2 ---"
	head -n 30 "$1" | sed 's/^/  | /'
}

_t_show_last() {
	[ -n "${_T_LAST_CMD:-}" ] && echo "  command: $_T_LAST_CMD (exit ${RC:-?})"
	_t_show "${OUT:-}" stdout
	_t_show "${ERR:-}" stderr
}

assert_exit() {
	local want=$1
	shift
	if [ "${RC:-unset}" = "$want" ]; then
		pass "${*:-exit $want}"
	else
		fail "${*:-exit status} (want exit $want, got ${RC:-unset})"
		_t_show_last
	fi
}

assert_contains() {
	local file=$1 text=$2
	if [ -f "$file" ] && grep -qF -- "$text" "$file"; then
		pass "$(basename "$file") contains '$text'"
	else
		fail "$(basename "$file") does not contain '$text'"
		_t_show_last
		case "$file" in "${OUT:-}" | "${ERR:-}") ;; *) _t_show "$file" "$file" ;; esac
	fi
}

assert_not_contains() {
	local file=$1 text=$2
	if [ -f "$file" ] && ! grep -qF -- "$text" "$file"; then
		pass "$(basename "$file") lacks '$text'"
	else
		fail "$(basename "$file") contains '$text' (or is missing)"
		_t_show_last
		case "$file" in "${OUT:-}" | "${ERR:-}") ;; *) _t_show "$file" "$file" ;; esac
	fi
}

assert_matches() { # [-i] FILE REGEX
	local icase=()
	if [ "$1" = -i ]; then
		icase=(-i)
		shift
	fi
	local file=$1 re=$2
	if [ -f "$file" ] && grep -qE "${icase[@]}" -- "$re" "$file"; then
		pass "$(basename "$file") matches /$re/${icase[*]}"
	else
		fail "$(basename "$file") does not match /$re/${icase[*]}"
		_t_show_last
		case "$file" in "${OUT:-}" | "${ERR:-}") ;; *) _t_show "$file" "$file" ;; esac
	fi
}

assert_eq() {
	local want=$1 got=$2
	shift 2
	if [ "$want" = "$got" ]; then
		pass "${*:-values equal}: $got"
	else
		fail "${*:-values differ}: want '$want', got '$got'"
	fi
}

assert_file_absent() {
	if [ -e "$1" ]; then
		fail "$1 exists but should not"
	else
		pass "$(basename "$1") absent"
	fi
}

assert_file_present() {
	if [ -s "$1" ]; then
		pass "$(basename "$1") present"
	else
		fail "$1 missing or empty"
	fi
}

assert_json() {
	local file=$1 filter=$2
	shift 2
	# jq -e on empty input exits 0: an empty output must not pass.
	if [ -s "$file" ] && jq -e "$filter" "$file" >/dev/null 2>&1 &&
		[ "$(jq -s 'length' "$file" 2>/dev/null)" = 1 ]; then
		pass "${*:-json: $filter}"
	else
		fail "${*:-json} ($filter does not hold)"
		_t_show_last
	fi
}

finish() {
	_T_FINISHED=1
	if [ $((_T_PASSED + _T_FAILED)) = 0 ]; then
		echo "FAIL: no assertion ran"
		_T_FAILED=1
	fi
	echo "$_T_PASSED passed, $_T_FAILED failed"
	[ $_T_FAILED = 0 ] && exit 0
	exit 1
}

# ------------------------------------------------------------ running it

_T_RUN_N=0
run_p11smime() {
	_T_RUN_N=$((_T_RUN_N + 1))
	OUT="$TEST_TMP/run$_T_RUN_N.out"
	ERR="$TEST_TMP/run$_T_RUN_N.err"
	_T_LAST_CMD="p11smime $*"
	local in=${RUN_STDIN:-/dev/null}
	# setsid: no controlling terminal, so a stray /dev/tty prompt fails
	# instead of waiting for a person; timeout: a token fault never hangs us.
	timeout -k 5 "${P11S_TIMEOUT:-60}" setsid -w "$P11SMIME" "$@" <"$in" >"$OUT" 2>"$ERR"
	RC=$?
	export STDOUT STDERR
	STDOUT=$(cat "$OUT")
	STDERR=$(cat "$ERR")
	if [ $RC = 124 ]; then
		echo "note: p11smime $* timed out after ${P11S_TIMEOUT:-60}s"
	fi
	return 0
}

# ---------------------------------------------------------------- tokens

new_token() {
	local dir
	dir=$(mktemp -d "$TEST_TMP/token.XXXXXX")
	cp -a "$P11S_TEMPLATE/." "$dir/"
	# The template's paths are absolute: repoint everything at the copy.
	sed -i "s|^directories.tokendir *=.*|directories.tokendir = $dir/tokens|" "$dir/softhsm2.conf"
	export TOKEN_DIR=$dir
	export SOFTHSM2_CONF=$dir/softhsm2.conf
	export P11SMIME_MODULE=$SOFTHSM_MODULE
	export PIN_FILE=$dir/pin
	PIN=$(head -n1 "$dir/pin")
	export PIN
	export SO_PIN=12345678
	export TOKEN_LABEL=p11smime-test
	export CA_PEM=$dir/ca/ca.pem
	export CA_KEY=$dir/ca/ca.key
	export CERTS_DIR=$dir/certs
	unset P11S_MOCK_FLAGS
}

# pkcs11-tool against the current SoftHSM token, logged in.
p11tool_token() {
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$PIN" "$@"
}

token_keygen() { # TYPE ID LABEL [--extractable]
	local type=$1 id=$2 label=$3 extra=() usage=(--usage-sign --usage-decrypt)
	[ "${4:-}" = --extractable ] && extra=(--extractable)
	case "$type" in EC:* | ec:*) usage=(--usage-sign --usage-derive) ;; esac
	p11tool_token --keypairgen --key-type "$type" --id "$id" --label "$label" "${usage[@]}" \
		--sensitive "${extra[@]}" >"$TEST_TMP/keygen.log" 2>&1 ||
		{ cat "$TEST_TMP/keygen.log"; echo "token_keygen $*: failed" >&2; return 1; }
}

_der_len() { # N -> DER length octets in hex
	if [ "$1" -lt 128 ]; then
		printf '%02x' "$1"
	elif [ "$1" -lt 256 ]; then
		printf '81%02x' "$1"
	else
		printf '82%04x' "$1"
	fi
}

token_pubkey() { # ID OUT_PEM
	local listing params point inner algo bits spki
	# --list-objects ignores --id: pick the block of the public key with this ID.
	listing=$(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --list-objects \
		--type pubkey 2>/dev/null | awk -v id="$1" '
			/^[A-Z][a-z]+ (Key )?Object;/ { if (b != "" && hit) print b; b = $0 "\n"; hit = 0; next }
			{ b = b $0 "\n" }
			$1 == "ID:" && tolower($2) == tolower(id) { hit = 1 }
			END { if (b != "" && hit) print b }')
	case "$listing" in
	*"EC_POINT:"*)
		# pkcs11-tool 0.23 cannot export P-384 public keys: build the SPKI from
		# CKA_EC_PARAMS and CKA_EC_POINT (a DER OCTET STRING around the point).
		params=$(awk '/EC_PARAMS:/ {print $2; exit}' <<<"$listing")
		point=$(awk '/EC_POINT:/ {print $2; exit}' <<<"$listing")
		case "${point:2:2}" in 81) point=${point:6} ;; 82) point=${point:8} ;; *) point=${point:4} ;; esac
		algo="06072a8648ce3d0201$params"
		algo="30$(_der_len $((${#algo} / 2)))$algo"
		bits="00$point"
		bits="03$(_der_len $((${#bits} / 2)))$bits"
		inner="$algo$bits"
		spki="30$(_der_len $((${#inner} / 2)))$inner"
		# shellcheck disable=SC2059
		printf "$(sed 's/../\\x&/g' <<<"$spki")" >"$TEST_TMP/pub.der"
		;;
	*"Public Key Object"*)
		pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --read-object \
			--type pubkey --id "$1" -o "$TEST_TMP/pub.der" >/dev/null 2>&1 ||
			{ echo "token_pubkey $1: cannot read the public key" >&2; return 1; }
		;;
	*)
		echo "token_pubkey $1: no public key with that id" >&2
		return 1
		;;
	esac
	openssl pkey -pubin -inform DER -in "$TEST_TMP/pub.der" -out "$2"
}

token_import_cert() { # PEM ID LABEL
	openssl x509 -in "$1" -outform DER -out "$TEST_TMP/cert.der" &&
		p11tool_token --write-object "$TEST_TMP/cert.der" --type cert --id "$2" --label "$3" >/dev/null 2>&1 ||
		{ echo "token_import_cert $*: failed" >&2; return 1; }
}

token_import_key() { # PEM ID LABEL: a software private key, made private and sensitive
	openssl pkey -in "$1" -outform DER -out "$TEST_TMP/key.der" &&
		p11tool_token --write-object "$TEST_TMP/key.der" --type privkey --id "$2" --label "$3" \
			--usage-sign --usage-decrypt --sensitive --private >/dev/null 2>&1 ||
		{ echo "token_import_key $*: failed" >&2; return 1; }
}

token_delete() { # TYPE ID
	p11tool_token --delete-object --type "$1" --id "$2" >/dev/null 2>&1 ||
		{ echo "token_delete $*: failed" >&2; return 1; }
}

# ca_issue KEY OUT_PEM [PROFILE_OR_EXTFILE] [issue-cert.sh options]
#   KEY: token:ID (a key on the current token), key:FILE (software private
#   key), a bare public key PEM file (pub:FILE, or just FILE; start = now then).
#   Options: --days N --start YYYYMMDDHHMMSSZ --end ... --serial HEX
#   --email ADDR --cn NAME --subject DN --no-email-dn.  SAN_EMAIL sets the
#   default e-mail.
ca_issue() {
	local key=$1 out=$2 profile=smime-any
	shift 2
	if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
		profile=$1
		shift
	fi
	case "$key" in token:* | key:* | pub:*) ;; *) key=pub:$key ;; esac
	P11S_PIN_FILE=$PIN_FILE P11S_TOKEN_LABEL=$TOKEN_LABEL P11S_SOFTHSM_MODULE=$SOFTHSM_MODULE \
		bash "$P11S_SRCDIR/softhsm-conf/issue-cert.sh" --ca-dir "$TOKEN_DIR/ca" --key "$key" \
		--out "$out" --profile "$profile" --email "${SAN_EMAIL:-test@example.org}" "$@"
}

# ------------------------------------------------------------------ mock

# mock_token [FLAGS]: use the fault-injecting module (tests/mock) with the
# software key pair of the current token dir (new_token is called if needed).
mock_token() {
	: "${P11S_MOCK_MODULE:?P11S_MOCK_MODULE (the mock PKCS#11 module) is not set}"
	[ -n "${TOKEN_DIR:-}" ] || new_token
	export P11SMIME_MODULE=$P11S_MOCK_MODULE
	export P11S_MOCK_FLAGS=${1:-}
	export P11S_MOCK_CERT=$TOKEN_DIR/mock/cert.pem
	export P11S_MOCK_KEY=$TOKEN_DIR/mock/key.pem
	export P11S_MOCK_PIN=$PIN
	export P11S_MOCK_LOG
	P11S_MOCK_LOG=$(mktemp "$TEST_TMP/mock.XXXXXX.log")
}

# Lines of the mock's call log matching an extended regex (0 when none).
mock_log_count() {
	local n
	n=$(grep -cE -- "$1" "$P11S_MOCK_LOG" 2>/dev/null) || true
	echo "${n:-0}"
}

# Empty the mock's call log before the next run.
mock_log_reset() { : >"$P11S_MOCK_LOG"; }
