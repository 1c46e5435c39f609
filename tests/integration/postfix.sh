# shellcheck shell=bash
# A private Postfix instance for the milter's test and bench (root only):
# config, queue and log under one directory, smtpd on a loopback port,
# everything relayed to smtp-sink on another loopback port, which dumps
# each mail it receives to a file.  Nothing touches /etc/postfix or port 25.
#
#   free_port                 a free TCP port on 127.0.0.1
#   pf_start DIR [MILTER]     start smtp-sink and Postfix under DIR; MILTER
#                             (inet:127.0.0.1:PORT) becomes smtpd_milters with
#                             milter_default_action = tempfail.  Sets PF_DIR,
#                             PF_PORT (smtpd), SINK_DIR (one file a mail),
#                             SINK_PORT, PF_LOG.
#   pf_stop                   stop Postfix and smtp-sink (safe to call twice)
#   pf_wait_sink N [SECONDS]  wait until SINK_DIR holds N mails; 1 if not
#   pf_flush                  ask the queue manager to deliver deferred mail

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pf_start() {
	local dir=$1 milter=${2:-}
	PF_DIR=$dir
	PF_PORT=$(free_port)
	SINK_PORT=$(free_port)
	SINK_DIR=$dir/sink
	PF_LOG=$dir/maillog
	mkdir -p "$dir/conf" "$dir/queue" "$dir/data" "$SINK_DIR"
	# Postfix's daemons run as postfix: the queue must be reachable, data theirs.
	chmod 755 "$dir" "$SINK_DIR"
	chown postfix "$dir/data"
	smtp-sink -u root -h sink.invalid -d "$SINK_DIR/%H%M%S." "127.0.0.1:$SINK_PORT" 64 \
		>"$dir/sink.log" 2>&1 &
	PF_SINK_PID=$!
	cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.p11smime.invalid
mydomain = p11smime.invalid
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$SINK_PORT
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_dns_support_level = disabled
disable_dns_lookups = yes
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connection_cache_on_demand = no
default_process_limit = 20
smtpd_milters = $milter
milter_default_action = tempfail
milter_protocol = 6
EOF
	cat >"$dir/conf/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
	postfix -c "$dir/conf" start >"$dir/start.log" 2>&1 || {
		cat "$dir/start.log" "$dir/maillog" 2>/dev/null
		return 1
	}
	# smtpd answers once master has bound the port.
	local i
	for i in $(seq 50); do
		python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PF_PORT),1).close()" \
			2>/dev/null && return 0
		sleep 0.1
	done
	echo "pf_start: smtpd does not answer on $PF_PORT" >&2
	return 1
}

pf_stop() { # safe under set -e: every step may find nothing to stop
	local i pid=
	if [ -n "${PF_DIR:-}" ] && [ -f "$PF_DIR/conf/main.cf" ]; then
		pid=$(head -n1 "$PF_DIR/queue/pid/master.pid" 2>/dev/null | tr -d ' ') || true
		postfix -c "$PF_DIR/conf" stop >/dev/null 2>&1 || true
		# master may take a moment; never leave it running.
		for i in $(seq 50); do
			if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
			sleep 0.1
		done
		if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
	fi
	if [ -n "${PF_SINK_PID:-}" ]; then
		kill "$PF_SINK_PID" 2>/dev/null || true
		wait "$PF_SINK_PID" 2>/dev/null || true
		PF_SINK_PID=
	fi
	return 0
}

pf_wait_sink() {
	local want=$1 secs=${2:-30} i
	for i in $(seq $((secs * 10))); do
		[ "$(find "$SINK_DIR" -type f | wc -l)" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

pf_flush() {
	postqueue -c "$PF_DIR/conf" -f >/dev/null 2>&1 || true
}
