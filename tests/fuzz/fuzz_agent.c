/*
 * The agent's wire format (src/front/agent_proto.c): the input is a byte
 * stream as a client or an agent would receive it, read frame by frame
 * with the real reader (from a memfd), each frame's strings split and
 * read as a request and as a result.  Hostile peers are same-uid only,
 * but a bug here would run inside the process that holds the login.
 */
#include "fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

#include "front/agent_proto.c"

static int put_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *buf = NULL;
	size_t cap = 0;
	uint32_t len;
	uint8_t type;
	int fd = memfd_create("fuzz_agent", 0);

	if (fd < 0)
		abort();
	if (size > 0 && put_all(fd, data, size) != 0)
		abort();
	lseek(fd, 0, SEEK_SET);
	while (agent_recv(fd, &type, &buf, &cap, &len) == 1) {
		struct agent_strings sl;
		struct agent_request rq;
		struct agent_result res;
		const char *why;

		if (len > agent_frame_max(type))
			abort(); /* the reader let a frame past its bound */
		if (agent_strings_parse(buf, len, &sl) != 0)
			continue;
		if (agent_request_parse(&sl, &rq, &why) == 0 && rq.cmd == AGENT_CMD_SIGN &&
		    rq.signer == NULL)
			abort();
		if (agent_result_parse(&sl, &res, &why) == 0) {
			for (size_t i = 0; i < res.n_verbose; i++)
				if (res.verbose[i] >= sl.n)
					abort();
			agent_result_free(&res);
		}
		agent_strings_free(&sl);
	}
	free(buf);
	close(fd);
	return 0;
}
