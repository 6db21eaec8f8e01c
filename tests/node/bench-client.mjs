// The benchmark's TypeScript client: the official TypeScript SDK's `Client`, the one most desktop
// and IDE clients and the Inspector are built on, calling a tool on several endpoints in turns.
//
// Usage: node bench-client.mjs SPEC_JSON. SPEC_JSON is {out, calls, warmup, timeoutMs, endpoints:
// [{label, tool, arguments, era, url} or {label, tool, arguments, era, command, args}]} where era
// is "2026-07-28" (probe with server/discover, then stateless requests) or "2025-11-25" (the
// SDK's default: an initialize handshake and a session). Writes one JSON object to the file `out`:
// {client, node, endpoints: [{label, latenciesMs, errors, firstError}]}. Exits non-zero if an
// endpoint cannot be reached at all; calls that fail are counted, not fatal.

import { readFileSync, writeFileSync } from 'node:fs';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

const spec = JSON.parse(process.argv[2]);
const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/client/package.json', import.meta.url)),
);

async function open(endpoint) {
  const options = endpoint.era === '2026-07-28' ? { versionNegotiation: { mode: 'auto' } } : {};
  const client = new Client({ name: 'mcp-gateway-bench', version: '0' }, options);
  const transport = endpoint.url
    ? new StreamableHTTPClientTransport(new URL(endpoint.url))
    : new StdioClientTransport({ command: endpoint.command, args: endpoint.args ?? [], stderr: 'ignore' });
  await client.connect(transport, { timeout: spec.timeoutMs });
  return client;
}

async function call(endpoint) {
  const result = await endpoint.client.callTool(
    { name: endpoint.tool, arguments: endpoint.arguments },
    { timeout: spec.timeoutMs },
  );
  if (result.isError) throw new Error(JSON.stringify(result.content).slice(0, 300));
}

const endpoints = spec.endpoints.map((e) => ({ ...e, latenciesMs: [], errors: 0, firstError: null }));
try {
  for (const endpoint of endpoints) {
    endpoint.client = await open(endpoint);
    await call(endpoint); // a broken endpoint fails the run here, before anything is timed
    for (let i = 0; i < spec.warmup; i++) await call(endpoint);
  }
  for (let i = 0; i < spec.calls; i++) {
    for (const endpoint of endpoints) {
      const start = process.hrtime.bigint();
      try {
        await call(endpoint);
        endpoint.latenciesMs.push(Number(process.hrtime.bigint() - start) / 1e6);
      } catch (error) {
        endpoint.errors += 1;
        endpoint.firstError ??= String(error);
      }
    }
  }
} finally {
  await Promise.allSettled(endpoints.filter((e) => e.client).map((e) => e.client.close()));
}
writeFileSync(
  spec.out,
  JSON.stringify({
    client: `@modelcontextprotocol/client ${version}`,
    node: process.version,
    endpoints: endpoints.map(({ label, latenciesMs, errors, firstError }) => ({ label, latenciesMs, errors, firstError })),
  }),
);
