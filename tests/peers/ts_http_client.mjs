// The official TypeScript SDK client over Streamable HTTP: the same script
// runs under Node and under Bun. The server's certificate is trusted
// through NODE_EXTRA_CA_CERTS (both runtimes read it). It runs SESSIONS
// sessions one after the other in the same process, each: initialize,
// `whoami`, CALLS × `add`, `refuse`, then the session's DELETE.
//
// Usage: node|bun ts_http_client.mjs URL CLIENT_NAME CALLS [SESSIONS]
// Output: {"client_pid", "server_pid", "runtime", "outcomes", "sessions": [id, ...]}
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, name = 'ts-client', calls = '3', sessions = '1'] = process.argv.slice(2);
const outcomes = {};
const note = (key, result) => {
  const k = `${key}:${result.isError ? 'tool_error' : 'ok'}`;
  outcomes[k] = (outcomes[k] ?? 0) + 1;
};
const ids = [];
let serverPid;
for (let s = 0; s < Number(sessions); s++) {
  const client = new Client({ name, version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  ids.push(transport.sessionId);
  const who = await client.callTool({ name: 'whoami', arguments: {} });
  note('whoami', who);
  serverPid = who.structuredContent?.result ?? Number(who.content?.[0]?.text);
  for (let i = 0; i < Number(calls); i++) {
    note('add', await client.callTool({ name: 'add', arguments: { a: i, b: 2 } }));
  }
  note('refuse', await client.callTool({ name: 'refuse', arguments: { reason: 'no' } }));
  await transport.terminateSession();
  await client.close();
}
console.log(
  JSON.stringify({
    client_pid: process.pid,
    server_pid: serverPid,
    runtime: typeof Bun === 'undefined' ? 'node' : 'bun',
    outcomes,
    sessions: ids,
  }),
);
