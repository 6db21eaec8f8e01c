// The official TypeScript SDK `Client` running a fixed list of cases against MCP endpoints, so a
// test can compare what it gets from a backend directly with what it gets through the gateway.
//
// Usage: node ts-cases.mjs SPEC_JSON. SPEC_JSON is {timeoutMs, runs: [{label, profile, mode,
// prefix, url} or {label, profile, mode, prefix, command, args}]}:
// - profile: which cases ("modern": tests/servers/modern.py; "time": mcp-server-time);
// - mode: the client's revision, "2025-11-25" (the SDK's default: `initialize` and a session) or
//   "2026-07-28" (pinned: `server/discover` must offer it, no fallback, so a run never passes in
//   the other revision by accident);
// - prefix: the gateway namespace the names carry ("" directly): tools and prompts are called as
//   `<prefix>__<name>`, resources read as `<prefix>+<uri>`.
// Prints one JSON object on stdout: {client, runs: {label: {revision, cases: {case: outcome}}}},
// where an outcome is what the client returned, or {error, code} if it threw: a failing case is
// reported, not fatal, so every difference shows at once. Exits non-zero only if a run cannot
// connect at all (that run is still reported, with {connectError}).

import { readFileSync } from 'node:fs';
import { Client, LOG_LEVEL_META_KEY, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

const spec = JSON.parse(process.argv[2]);
const timeout = spec.timeoutMs;
const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/client/package.json', import.meta.url)),
);

// The answer the script's elicitation handler gives to every form it is shown (it records the
// forms' params, so what the client was asked is compared too).
const ELICIT_ANSWER = { action: 'accept', content: { name: 'ann' } };

const tool = (run, name) => (run.prefix ? `${run.prefix}__${name}` : name);
// A resource's namespace is the prefix in URI-scheme characters (gateway/naming.py).
const uri = (run, original) =>
  run.prefix ? `${run.prefix.toLowerCase().replaceAll('_', '-')}+${original}` : original;

async function listAllTools(client, run) {
  // Page by page, following the cursor, as the server (or the gateway) pages it.
  const tools = [];
  let cursor;
  for (let page = 0; page < 50; page++) {
    const result = await client.listTools(cursor ? { cursor } : {}, { timeout, cacheMode: 'bypass' });
    tools.push(...result.tools);
    cursor = result.nextCursor;
    if (!cursor) return tools;
  }
  throw new Error(`tools/list did not end after 50 pages at ${run.label}`);
}

// A call with its progress notifications and the log messages sent while it ran. The log level is
// asked for the revision's way: `logging/setLevel` once (2025-11-25), or on the request (2026-07-28).
async function withProgress(client, run, params) {
  const progress = [];
  const logs = [];
  client.setNotificationHandler('notifications/message', ({ params: { level, data } }) => {
    logs.push({ level, data });
  });
  if (run.mode === '2025-11-25') await client.setLoggingLevel('info', { timeout });
  const meta = run.mode === '2025-11-25' ? {} : { _meta: { [LOG_LEVEL_META_KEY]: 'info' } };
  const result = await client.callTool({ ...params, ...meta }, {
    timeout,
    onprogress: ({ progress: p, total, message }) => progress.push({ progress: p, total, message }),
  });
  return { result, progress, logs };
}

// Listings every profile runs (a server without prompts or resources lists none).
const LISTINGS = {
  tools: (c, r) => listAllTools(c, r),
  prompts: async (c) => (await c.listPrompts({}, { timeout, cacheMode: 'bypass' })).prompts,
  resources: async (c) => (await c.listResources({}, { timeout, cacheMode: 'bypass' })).resources,
  templates: async (c) =>
    (await c.listResourceTemplates({}, { timeout, cacheMode: 'bypass' })).resourceTemplates,
};

const PROFILES = {
  modern: {
    ...LISTINGS,
    echo: (c, r) => c.callTool({ name: tool(r, 'echo'), arguments: { text: 'hi' } }, { timeout }),
    structured: (c, r) => c.callTool({ name: tool(r, 'weather'), arguments: { city: 'Oslo' } }, { timeout }),
    progressAndLogs: (c, r) => withProgress(c, r, { name: tool(r, 'count'), arguments: { n: 3 } }),
    prompt: (c, r) => c.getPrompt({ name: tool(r, 'greet'), arguments: { name: 'ann' } }, { timeout }),
    resource: (c, r) => c.readResource({ uri: uri(r, 'modern://info') }, { timeout, cacheMode: 'bypass' }),
    template: (c, r) => c.readResource({ uri: uri(r, 'modern://item/7') }, { timeout, cacheMode: 'bypass' }),
    completion: (c, r) =>
      c.complete(
        { ref: { type: 'ref/prompt', name: tool(r, 'greet') }, argument: { name: 'name', value: 'al' } },
        { timeout },
      ),
    // modern.py's `ask` answers with what the client's elicitation handler said.
    inputRound: async (c, r, asked) => {
      const result = await c.callTool({ name: tool(r, 'ask'), arguments: {} }, { timeout });
      return { result, asked };
    },
  },
  time: {
    ...LISTINGS,
    structured: (c, r) =>
      c.callTool(
        {
          name: tool(r, 'convert_time'),
          arguments: { source_timezone: 'UTC', time: '12:00', target_timezone: 'Asia/Tokyo' },
        },
        { timeout },
      ),
    toolError: (c, r) =>
      c.callTool(
        {
          name: tool(r, 'convert_time'),
          arguments: { source_timezone: 'Nowhere/Atlantis', time: '12:00', target_timezone: 'UTC' },
        },
        { timeout },
      ),
  },
};

async function open(run) {
  const options = {
    capabilities: { elicitation: { form: {} } },
    ...(run.mode === '2026-07-28' ? { versionNegotiation: { mode: { pin: '2026-07-28' } } } : {}),
  };
  const client = new Client({ name: 'mcp-gateway-ts-cases', version: '0' }, options);
  const asked = [];
  client.setRequestHandler('elicitation/create', async ({ params }) => {
    asked.push(params);
    return ELICIT_ANSWER;
  });
  const transport = run.url
    ? new StreamableHTTPClientTransport(new URL(run.url))
    : new StdioClientTransport({ command: run.command, args: run.args ?? [], stderr: 'ignore' });
  await client.connect(transport, { timeout });
  return { client, asked };
}

function failure(error) {
  return { error: String(error?.message ?? error), code: error?.code ?? null };
}

const out = {};
let failed = false;
for (const run of spec.runs) {
  const cases = PROFILES[run.profile];
  if (!cases) throw new Error(`unknown profile ${run.profile}`);
  let client, asked;
  try {
    ({ client, asked } = await open(run));
  } catch (error) {
    out[run.label] = { connectError: failure(error) };
    failed = true;
    continue;
  }
  try {
    const results = {};
    for (const [name, action] of Object.entries(cases)) {
      try {
        results[name] = await action(client, run, asked);
      } catch (error) {
        results[name] = failure(error);
      }
    }
    out[run.label] = { revision: client.getNegotiatedProtocolVersion() ?? null, cases: results };
  } finally {
    await client.close();
  }
}
process.stdout.write(JSON.stringify({ client: `@modelcontextprotocol/client ${version}`, runs: out }));
process.exitCode = failed ? 1 : 0;
