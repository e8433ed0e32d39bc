/*
 * bench/c's libsoccr sequence (soccr_sequence.h) as a tiny Node-API module, so that
 * bench/soccr/js-soccr-bench.js can time the very same C on the very same connection, in the
 * same process, interleaved with its JS rows. A separate process on its own connection differs
 * by up to ~35% from run to run on this machine (measured: dump + restore p50 23.7-32.1 µs over
 * six runs of soccr_bench), more than the JS overhead being measured. Benchmark-only: not part of
 * the package's addon.
 *
 * cycles(fd, iterations, times: Float64Array(2 * iterations)) -> fd
 *   per iteration: dump (timed into times[2i]), close in repair mode (not timed), restore into a
 *   new socket (timed into times[2i+1]); returns the last restored socket. The caller holds the
 *   connection's 4-tuple in a lock. Throws Error("<step>: <strerror>") on a failure (the
 *   connection is lost then: a benchmark, not a library).
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../soccr_sequence.h"

static napi_value fail(napi_env env, const char *step, int err)
{
	char message[160];
	snprintf(message, sizeof(message), "%s: %s", step, strerror(err));
	napi_throw_error(env, NULL, message);
	return NULL;
}

static napi_value cycles(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	int32_t fd = -1, iterations = 0;
	napi_typedarray_type type;
	size_t length = 0;
	void *data = NULL;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
	    napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
	    napi_get_value_int32(env, argv[1], &iterations) != napi_ok || iterations < 0 ||
	    napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok ||
	    type != napi_float64_array || length < 2 * (size_t)iterations)
		return fail(env, "arguments", EINVAL);
	double *times = data;
	for (int i = 0; i < iterations; i++) {
		struct image im;
		double t0 = now_us();
		if (lib_dump(fd, &im))
			return fail(env, "lib_dump", errno);
		double t1 = now_us();
		close(fd);
		double t2 = now_us();
		fd = lib_restore(&im);
		double t3 = now_us();
		if (fd < 0)
			return fail(env, "lib_restore", errno);
		times[2 * i] = t1 - t0;
		times[2 * i + 1] = t3 - t2;
	}
	napi_value result;
	napi_create_int32(env, fd, &result);
	return result;
}

NAPI_MODULE_INIT()
{
	napi_value fn;
	if (napi_create_function(env, "cycles", NAPI_AUTO_LENGTH, cycles, NULL, &fn) != napi_ok ||
	    napi_set_named_property(env, exports, "cycles", fn) != napi_ok)
		return NULL;
	return exports;
}
