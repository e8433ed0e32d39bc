"""pycriu side of bench/criu-rpc-bench.js: reads one JSON request per line on stdin, runs it with
pycriu (criu swrk per call, like our client), and prints {"ms": elapsed, ...} per line. Timing is
taken inside this process around the pycriu call, so Python's start-up is not counted."""
import json
import os
import sys
import time

import pycriu

CRIU = sys.argv[1]


def make_criu(request):
    c = pycriu.criu()
    c.use_binary(CRIU)
    if "dir" in request:
        c.opts.images_dir_fd = os.open(request["dir"], os.O_DIRECTORY)
        c.opts.log_level = 4
        c.opts.log_file = request["log"]
        c.opts.network_lock = 3  # SKIP: the benchmarked process has no sockets
    return c


for line in sys.stdin:
    request = json.loads(line)
    c = make_criu(request)
    reply = {}
    start = time.perf_counter()
    try:
        if request["op"] == "check":
            c.check()
        elif request["op"] == "dump":
            c.opts.pid = request["pid"]
            c.dump()
        elif request["op"] == "restore":
            reply["pid"] = c.restore().pid
        reply["ms"] = (time.perf_counter() - start) * 1000
    except Exception as error:  # reported to the driver, which fails the run
        reply["error"] = repr(error)
    finally:
        if c.opts.HasField("images_dir_fd") and c.opts.images_dir_fd >= 0:
            os.close(c.opts.images_dir_fd)
    print(json.dumps(reply), flush=True)
