/*
 * The agent's wire format (src/front/agent_proto.c): frames and string lists
 * round-trip, and everything malformed a peer could send is refused.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "front/agent_proto.c"

static void build(struct agent_buf *b, const char *const *s, size_t n)
{
	memset(b, 0, sizeof(*b));
	for (size_t i = 0; i < n; i++)
		agent_buf_str(b, s[i]);
	assert_false(b->oom);
}

static int parse_req(const char *const *s, size_t n, struct agent_request *rq, const char **why)
{
	struct agent_buf b;
	struct agent_strings sl;
	int r;

	build(&b, s, n);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	r = agent_request_parse(&sl, rq, why);
	/* The request points into the list: only its scalars are checked after this. */
	agent_strings_free(&sl);
	agent_buf_free(&b);
	return r;
}

static void test_strings_round_trip(void **state)
{
	const char *const s[] = {"1", "sign", "", "signer", "alice@example.org"};
	struct agent_buf b;
	struct agent_strings sl;

	(void)state;
	build(&b, s, 5);
	assert_int_equal(b.len, 5 * 4 + 1 + 4 + 0 + 6 + 17);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	assert_int_equal(sl.n, 5);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(sl.s[i], s[i]);
	agent_strings_free(&sl);
	/* Cut anywhere inside a string or a length: refused, nothing left allocated. */
	for (size_t cut = 1; cut < b.len; cut++) {
		int r = agent_strings_parse(b.p, cut, &sl);

		if (r == 0)
			agent_strings_free(&sl);
		/* Only cuts on a string boundary parse. */
		assert_true(r == 0 ? (cut == 5 || cut == 13 || cut == 17 || cut == 27) : 1);
	}
	agent_buf_free(&b);
}

static void test_strings_hostile(void **state)
{
	unsigned char huge[8] = {0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c', 'd'};
	unsigned char nul[6] = {0, 0, 0, 2, 'a', 0};
	unsigned char *many = calloc(AGENT_STRINGS_MAX + 1, 4);
	struct agent_strings sl;

	(void)state;
	assert_int_equal(agent_strings_parse(huge, sizeof(huge), &sl), -1);
	assert_null(sl.s);
	assert_int_equal(agent_strings_parse(nul, sizeof(nul), &sl), -1);
	/* 257 empty strings: one too many. */
	assert_non_null(many);
	assert_int_equal(agent_strings_parse(many, (AGENT_STRINGS_MAX + 1) * 4, &sl), -1);
	assert_int_equal(agent_strings_parse(many, AGENT_STRINGS_MAX * 4, &sl), 0);
	assert_int_equal(sl.n, AGENT_STRINGS_MAX);
	agent_strings_free(&sl);
	free(many);
}

static void test_frame_bounds(void **state)
{
	unsigned char hdr[AGENT_HDR_LEN];
	uint8_t type;
	uint32_t len;

	(void)state;
	agent_frame_header_put(hdr, AGENT_DATA, AGENT_DATA_MAX);
	assert_int_equal(agent_frame_header(hdr, &type, &len), 0);
	assert_int_equal(len, AGENT_DATA_MAX);
	agent_frame_header_put(hdr, AGENT_DATA, AGENT_DATA_MAX + 1);
	assert_int_equal(agent_frame_header(hdr, &type, &len), -1);
	agent_frame_header_put(hdr, AGENT_END, 1);
	assert_int_equal(agent_frame_header(hdr, &type, &len), -1);
	agent_frame_header_put(hdr, AGENT_RESULT, AGENT_RESULT_MAX);
	assert_int_equal(agent_frame_header(hdr, &type, &len), 0);
	agent_frame_header_put(hdr, 'X', 0);
	assert_int_equal(agent_frame_header(hdr, &type, &len), -1);
}

static void test_frames_over_a_socket(void **state)
{
	int sv[2];
	unsigned char *buf = NULL, hdr[AGENT_HDR_LEN];
	size_t cap = 0;
	uint8_t type;
	uint32_t len;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(agent_send(sv[0], AGENT_DATA, "hello", 5), 0);
	assert_int_equal(agent_send(sv[0], AGENT_END, NULL, 0), 0);
	/* A header claiming more than the bound: refused before anything is read or allocated. */
	agent_frame_header_put(hdr, AGENT_REQUEST, AGENT_MSG_MAX + 1);
	assert_int_equal(agent_write_all(sv[0], hdr, sizeof(hdr)), 0);
	assert_int_equal(agent_recv(sv[1], &type, &buf, &cap, &len), 1);
	assert_int_equal(type, AGENT_DATA);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(agent_recv(sv[1], &type, &buf, &cap, &len), 1);
	assert_int_equal(type, AGENT_END);
	assert_int_equal(agent_recv(sv[1], &type, &buf, &cap, &len), -1);
	/* A peer that stops mid-frame: an error, not a short frame. */
	agent_frame_header_put(hdr, AGENT_DATA, 10);
	assert_int_equal(agent_write_all(sv[0], hdr, sizeof(hdr)), 0);
	assert_int_equal(agent_write_all(sv[0], "abc", 3), 0);
	close(sv[0]);
	assert_int_equal(agent_recv(sv[1], &type, &buf, &cap, &len), -1);
	assert_int_equal(agent_recv(sv[1], &type, &buf, &cap, &len), 0);
	close(sv[1]);
	free(buf);
}

struct drain {
	int fd;
	unsigned char *buf;
	size_t cap;
	uint8_t type;
	uint32_t len;
	int r;
};

static void *drain_one(void *arg)
{
	struct drain *d = arg;

	/* Slowly: the sender meets a full socket buffer and sends in pieces. */
	usleep(20000);
	d->r = agent_recv(d->fd, &d->type, &d->buf, &d->cap, &d->len);
	return NULL;
}

static void on_alarm(int sig)
{
	(void)sig;
}

/*
 * A frame larger than the socket's buffer, its send interrupted again and
 * again by a signal (no SA_RESTART): each partial send is resumed where it
 * stopped, and the frame arrives whole.
 */
static void test_frame_in_pieces(void **state)
{
	int sv[2], small = 4096;
	size_t n = AGENT_DATA_MAX;
	unsigned char *big = malloc(n);
	struct drain d = {0};
	struct sigaction sa = {.sa_handler = on_alarm}, old;
	struct itimerval every = {{0, 1000}, {0, 1000}}, off = {{0, 0}, {0, 0}};
	pthread_t t;

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (unsigned char)(i * 7 + (i >> 11));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	d.fd = sv[1];
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	assert_int_equal(pthread_create(&t, NULL, drain_one, &d), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &every, NULL), 0);
	assert_int_equal(agent_send(sv[0], AGENT_DATA, big, (uint32_t)n), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(d.r, 1);
	assert_int_equal(d.type, AGENT_DATA);
	assert_int_equal(d.len, n);
	assert_memory_equal(d.buf, big, n);
	close(sv[0]);
	close(sv[1]);
	free(d.buf);
	free(big);
}

static void test_request(void **state)
{
	const char *ok[] = {"1",    "sign", "signer", "a@example.org", "pss",   "1",
	                    "form", "2",    "at",     "1800000000",    "chain", "/etc/c.pem"};
	const char *old[] = {"0", "sign", "signer", "a"};
	const char *cmd[] = {"1", "keygen"};
	const char *key[] = {"1", "sign", "signer", "a", "module", "/x.so"};
	const char *rel[] = {"1", "sign", "signer", "a", "chain", "c.pem"};
	const char *odd[] = {"1", "sign", "signer"};
	const char *nosigner[] = {"1", "sign", "pss", "0"};
	const char *flag[] = {"1", "sign", "signer", "a", "pss", "yes"};
	const char *num[] = {"1", "decrypt", "at", "-1"};
	const char *form[] = {"1", "sign", "signer", "a", "form", "3"};
	const char *cross[] = {"1", "decrypt", "signer", "a"};
	const char *dec[] = {"1", "decrypt", "key", "pkcs11:id=%01", "discard", "1", "inform", "1"};
	struct agent_request rq;
	const char *why = NULL;

	(void)state;
	assert_int_equal(parse_req(ok, 12, &rq, &why), 0);
	assert_int_equal(rq.cmd, AGENT_CMD_SIGN);
	assert_int_equal(rq.pss, 1);
	assert_int_equal(rq.form, 2);
	assert_int_equal(rq.at, 1800000000LL);
	assert_int_equal(rq.chain_count, 1);
	assert_int_equal(parse_req(dec, 8, &rq, &why), 0);
	assert_int_equal(rq.cmd, AGENT_CMD_DECRYPT);
	assert_int_equal(rq.discard, 1);
	assert_int_equal(rq.inform, 1);
	assert_int_equal(parse_req(old, 4, &rq, &why), -1);
	assert_string_equal(why, "the client speaks another protocol version");
	assert_int_equal(parse_req(cmd, 2, &rq, &why), -1);
	assert_int_equal(parse_req(key, 6, &rq, &why), -1);
	assert_int_equal(parse_req(rel, 6, &rq, &why), -1);
	assert_int_equal(parse_req(odd, 3, &rq, &why), -1);
	assert_int_equal(parse_req(nosigner, 4, &rq, &why), -1);
	assert_int_equal(parse_req(flag, 6, &rq, &why), -1);
	assert_int_equal(parse_req(num, 4, &rq, &why), -1);
	assert_int_equal(parse_req(form, 6, &rq, &why), -1);
	assert_int_equal(parse_req(cross, 4, &rq, &why), -1);
}

static void test_result(void **state)
{
	const char *ok[] = {"verbose", "v1",        "rc", "772",  "message", "m",    "candidate",
	                    "c1",      "candidate", "c2", "note", "n",       "json", "{}"};
	const char *norc[] = {"message", "m"};
	const char *big[] = {"rc", "65536"};
	const char *unk[] = {"rc", "0", "secret", "x"};
	struct agent_buf b;
	struct agent_strings sl;
	struct agent_result res;
	const char *why;

	(void)state;
	build(&b, ok, 14);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	assert_int_equal(agent_result_parse(&sl, &res, &why), 0);
	assert_int_equal(res.rc, 772);
	assert_int_equal(res.n_candidates, 2);
	assert_string_equal(sl.s[res.candidates[1]], "c2");
	assert_string_equal(sl.s[res.verbose[0]], "v1");
	assert_string_equal(res.json, "{}");
	agent_result_free(&res);
	agent_strings_free(&sl);
	agent_buf_free(&b);
	build(&b, norc, 2);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	assert_int_equal(agent_result_parse(&sl, &res, &why), -1);
	agent_strings_free(&sl);
	agent_buf_free(&b);
	build(&b, big, 2);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	assert_int_equal(agent_result_parse(&sl, &res, &why), -1);
	agent_strings_free(&sl);
	agent_buf_free(&b);
	build(&b, unk, 4);
	assert_int_equal(agent_strings_parse(b.p, b.len, &sl), 0);
	assert_int_equal(agent_result_parse(&sl, &res, &why), -1);
	agent_strings_free(&sl);
	agent_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strings_round_trip),
	    cmocka_unit_test(test_strings_hostile),
	    cmocka_unit_test(test_frame_bounds),
	    cmocka_unit_test(test_frames_over_a_socket),
	    cmocka_unit_test(test_frame_in_pieces),
	    cmocka_unit_test(test_request),
	    cmocka_unit_test(test_result),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
