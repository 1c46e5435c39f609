/*
 * jansson and libmilter, loaded on first use.
 *
 * Every library a process maps costs it page faults and relocations
 * before main(): on the 2-vCPU VM of docs/performance.md about 0.3-0.5 ms
 * each, a few per cent of a one-shot signature (issue 11 measures
 * p11smime against `openssl cms` per process).  Most runs print no JSON
 * and only `milter` speaks the milter protocol, so libp11smime-cli.so
 * links neither: the functions it calls are defined here, and the first
 * call opens the real library (by its soname, found at configure time)
 * and forwards to it.  The libraries are still the well-kept ones, only
 * mapped later.  Built into the shared command line only (CMakeLists.txt);
 * the archive build (-DP11S_SHARED=OFF) links both libraries itself.
 *
 * A library that cannot be opened is said once on stderr, and its
 * functions fail as they do when out of memory (NULL, -1, MI_FAILURE).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include <jansson.h>
#include <libmilter/mfapi.h>

struct lazy_lib {
	const char *soname, *what;
	pthread_once_t once;
	void *handle;
};

static struct lazy_lib jansson = {P11S_JANSSON_SONAME, "JSON reports", PTHREAD_ONCE_INIT, NULL};
static struct lazy_lib milter = {P11S_MILTER_SONAME, "the milter", PTHREAD_ONCE_INIT, NULL};

static void open_jansson(void)
{
	jansson.handle = dlopen(jansson.soname, RTLD_NOW | RTLD_LOCAL);
	if (jansson.handle == NULL)
		fprintf(stderr, "p11smime: cannot load %s (%s): %s\n", jansson.soname, jansson.what,
		        dlerror());
}

static void open_milter(void)
{
	milter.handle = dlopen(milter.soname, RTLD_NOW | RTLD_LOCAL);
	if (milter.handle == NULL)
		fprintf(stderr, "p11smime: cannot load %s (%s): %s\n", milter.soname, milter.what,
		        dlerror());
}

static void *lazy_sym(struct lazy_lib *l, void (*open_it)(void), const char *name)
{
	void *p;

	pthread_once(&l->once, open_it);
	if (l->handle == NULL)
		return NULL;
	p = dlsym(l->handle, name);
	if (p == NULL)
		fprintf(stderr, "p11smime: %s has no %s\n", l->soname, name);
	return p;
}

/* One forwarding definition: the real function, looked up once, then called. */
#define LAZY(lib, ret, fail, name, params, args)                          \
	ret name params                                                   \
	{                                                                 \
		static ret(*_Atomic cached) params;                       \
		ret(*f) params = cached;                                  \
                                                                          \
		if (f == NULL) {                                          \
			*(void **)&f = lazy_sym(&lib, open_##lib, #name); \
			if (f == NULL)                                    \
				return fail;                              \
			cached = f;                                       \
		}                                                         \
		return f args;                                            \
	}

LAZY(jansson, json_t *, NULL, json_object, (void), ())
LAZY(jansson, json_t *, NULL, json_array, (void), ())
LAZY(jansson, json_t *, NULL, json_string, (const char *value), (value))
LAZY(jansson, json_t *, NULL, json_integer, (json_int_t value), (value))
LAZY(jansson, json_t *, NULL, json_true, (void), ())
LAZY(jansson, json_t *, NULL, json_false, (void), ())
LAZY(jansson, json_t *, NULL, json_null, (void), ())
LAZY(jansson, int, -1, json_object_set_new, (json_t * object, const char *key, json_t *value),
     (object, key, value))
LAZY(jansson, int, -1, json_object_del, (json_t * object, const char *key), (object, key))
LAZY(jansson, int, -1, json_object_update, (json_t * object, json_t *other), (object, other))
LAZY(jansson, int, -1, json_array_append_new, (json_t * array, json_t *value), (array, value))
LAZY(jansson, char *, NULL, json_dumps, (const json_t *json, size_t flags), (json, flags))
LAZY(jansson, json_t *, NULL, json_loads, (const char *input, size_t flags, json_error_t *error),
     (input, flags, error))

/* Only a value jansson made reaches json_delete(): jansson is open by then. */
void json_delete(json_t *json)
{
	static void (*_Atomic cached)(json_t *);
	void (*f)(json_t *) = cached;

	if (f == NULL) {
		*(void **)&f = lazy_sym(&jansson, open_jansson, "json_delete");
		if (f == NULL)
			return;
		cached = f;
	}
	f(json);
}

LAZY(milter, int, MI_FAILURE, smfi_register, (struct smfiDesc desc), (desc))
LAZY(milter, int, MI_FAILURE, smfi_main, (void), ())
LAZY(milter, int, MI_FAILURE, smfi_setconn, (char *conn), (conn))
LAZY(milter, int, MI_FAILURE, smfi_opensocket, (bool rmsocket), (rmsocket))
LAZY(milter, int, MI_FAILURE, smfi_setpriv, (SMFICTX * ctx, void *priv), (ctx, priv))
LAZY(milter, void *, NULL, smfi_getpriv, (SMFICTX * ctx), (ctx))
LAZY(milter, char *, NULL, smfi_getsymval, (SMFICTX * ctx, char *name), (ctx, name))
LAZY(milter, int, MI_FAILURE, smfi_setreply, (SMFICTX * ctx, char *rcode, char *xcode, char *msg),
     (ctx, rcode, xcode, msg))
LAZY(milter, int, MI_FAILURE, smfi_addheader, (SMFICTX * ctx, char *name, char *value),
     (ctx, name, value))
LAZY(milter, int, MI_FAILURE, smfi_chgheader, (SMFICTX * ctx, char *name, int idx, char *value),
     (ctx, name, idx, value))
LAZY(milter, int, MI_FAILURE, smfi_replacebody, (SMFICTX * ctx, unsigned char *body, int len),
     (ctx, body, len))
