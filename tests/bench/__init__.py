"""Gateway benchmark: ``python -m tests.bench`` (run from the repository root).

Measures ``mcp-server-time``'s ``get_current_time`` ({"timezone": "UTC"}) reached

* ``direct``  - over stdio with ``fastmcp.Client`` (no gateway at all),
* ``gateway`` - through ``python -m gateway serve`` over streamable HTTP,
* ``proxy``   - through FastMCP's own ``create_proxy`` over streamable HTTP (same stdio backend),

each sequentially (``--calls`` calls from one client after ``--warmup`` warm-up calls; for the
gateway also from a 2025-11-25 session client, mode ``seq 2025``) and with
``--clients`` concurrent clients (each its own ``fastmcp.Client`` session, ``--calls-per-client``
calls each, after a short untimed warm-up per client).

The servers under test always run in their own processes (started here, in their own process
groups, bound to 127.0.0.1); the client side runs in this process on one asyncio loop. On a small
machine the client and the servers share the cores, so compare paths measured in the same run
rather than numbers across machines.

The package, by concept:

* ``scenarios`` - what is measured: one ``Scenario`` per section (``SCENARIOS``); the parts
  measured in process live in ``chain`` (the middleware chain), ``masking`` (100 KB of realistic
  text) and ``docker_backends``;
* ``runners`` - how a load is timed (sequential, concurrent, interleaved, the TypeScript client);
* ``clients`` - the endpoints a load runs against: which client to open, which tool to call;
* ``processes`` - the servers under test as processes, their readiness, CPU and memory;
* ``results`` - settings and measured results; ``report`` - the table, summary lines and JSON;
* ``fastmcp_proxy`` - FastMCP's own proxy, the baseline's server process.

Adding a section: write ``async def scenario_x(ctx: BenchContext) -> ScenarioResult`` in
``scenarios`` (the helpers ``run_standard_loads``, ``run_sequential``, ``run_concurrent``,
``ctx.gateway_server`` and ``ctx.http_server`` do the heavy lifting) and append a ``Scenario`` to
``SCENARIOS``. Scenarios with ``default=False`` only run when named in ``--only``. Summary lines
that compare scenarios live in ``report.summarize``.
"""
