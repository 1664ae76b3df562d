"""qapp's benchmarks: ``python -m bench``.

It starts its own servers on free loopback ports (qapp under hypercorn at
several worker counts, a redis-server, the peers and the bare-ASGI
ceilings), drives
each route with wrk, measures the stores' own ceilings, and writes
``results.json``, ``results.md`` and ``results.png`` under ``bench/results/``.
Nothing heavy is imported here.

=================  ==========================================================
module             concept
=================  ==========================================================
``cli``            the command line
``runner``         start servers, drive routes, stop everything
``routes``         the routes under load and how each is prepared
``wrk``            run wrk and parse what ``wrk_report.lua`` prints
``ceilings``       redis-benchmark and a raw aiosqlite UPSERT loop
``targets``        the issue's ratios, checked against one run
``report``         JSON, Markdown and the chart
``hotspots``       a short cProfile of one qapp worker under a route's load
``profiled``       qapp's service with cProfile on, for ``hotspots``
``appcost``        ``python -m bench.appcost``: the CPU a request costs inside
                   qapp, bare Quart and FastAPI, called in process, no server
``peers``          the Flask and FastAPI peers, the bare-ASGI ceiling, their
                   servers, and the Redis reads they share with qapp
=================  ==========================================================
"""
