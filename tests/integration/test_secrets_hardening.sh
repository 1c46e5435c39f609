#!/usr/bin/env bash
# Secrets (issue 9): a pin-value in a URI never reaches a message, malformed
# URI or not, whatever the command; an env: PIN is gone from the environment
# once read; the process holding a PIN cannot be read by others.
. "$(dirname "$0")/lib.sh"

new_token
W=$TEST_TMP/w
mkdir -p "$W"
printf 'From: rsa2048@example.org\nTo: p256@example.org\nSubject: s\n\nhello\n' >"$W/m.eml"

# ------------------------------------------------- pin-value never echoed

uris=(
	'pkcs11:token=x;pin-value=SECRET4711;id=%zz'          # malformed: bad escape
	'pkcs11:token=x?pin-value=SECRET4711&id=%zz'          # malformed, in the query
	'pkcs11:token=x;pin-value=SECRET4711;typo=1'          # an attribute p11-kit does not know
	'PKCS11:token=x;PIN-VALUE=SECRET4711;id=%zz'          # upper case scheme and name
	'pkcs11:token=x;pin%2Dvalue=SECRET4711;id=%zz'        # percent-encoded name
	'pkcs11:token=no%20such%20token?pin-value=SECRET4711' # well-formed, matches nothing
)
for u in "${uris[@]}"; do
	for cmd in "sign --signer" "encrypt --recipient" "decrypt --key" "verify --trust" \
		"list" "validate" "tokens"; do
		# shellcheck disable=SC2086
		run_p11smime $cmd "$u" -i "$W/m.eml"
		case $cmd in list | validate | tokens)
			# shellcheck disable=SC2086
			run_p11smime $cmd "$u" ;;
		esac
		if grep -q SECRET4711 "$OUT" "$ERR"; then
			fail "$cmd '$u' echoes the pin-value"
			_t_show "$ERR" stderr
		else
			pass "$cmd hides the pin-value of '$u'"
		fi
	done
done

# ------------------------------------------ env: PIN, and a non-dumpable process

# sign reads the message from a FIFO we hold open: the PIN has been read and
# the login is done while it waits there.
mkfifo "$W/fifo"
export SIGN_PIN_4711="$PIN"
"$P11SMIME" --pin-source env:SIGN_PIN_4711 sign --signer rsa2048@example.org -i "$W/fifo" \
	-o "$W/signed.eml" 2>"$W/sign.err" &
pid=$!
exec 7>"$W/fifo"
unset SIGN_PIN_4711
# Wait until the login is done (the key is opened) or give up after 20 s.
for _ in $(seq 200); do
	grep -q . "/proc/$pid/maps" 2>/dev/null || break
	if [ -r "/proc/$pid/environ" ] && ! tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
		grep -qx "SIGN_PIN_4711=$PIN"; then
		break
	fi
	[ -r "/proc/$pid/environ" ] || break
	sleep 0.1
done
if [ -r "/proc/$pid/environ" ] && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
	grep -q "SIGN_PIN_4711=$PIN"; then
	fail "the PIN is still in the environment of the running sign"
else
	pass "the env: PIN is gone from /proc/PID/environ (or it is unreadable: not dumpable)"
fi
# A non-dumpable process's /proc files belong to root; as another user,
# environ is then unreadable.  As root, at least its owner shows it.
if [ "$(id -u)" != 0 ]; then
	if cat "/proc/$pid/environ" >/dev/null 2>&1; then
		fail "the process holding a PIN is readable (dumpable)"
	else
		pass "the process holding a PIN is not dumpable"
	fi
fi
printf 'From: rsa2048@example.org\n\nhi\n' >&7
exec 7>&-
wait $pid
RC=$?
assert_exit 0 "sign with an env: PIN works"
finish
