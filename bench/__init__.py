"""The benchmark harness behind `make bench`: one run, one table of ratios to bare floors.

Each server runs in its own process on 127.0.0.1 and `wrk` drives it from another. The harness
never imports `nexus`; only `bench.nexus_server`, run as a child process, does.
"""
