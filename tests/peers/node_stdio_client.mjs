// A Node MCP client (the official @modelcontextprotocol/sdk) that spawns
// server-everything over stdio and calls a few tools: runs as any user, no
// Python needed (the non-root attribution test runs it as `nobody`).
//
// Usage: node node_stdio_client.mjs CLIENT_NAME CALLS
// Output: {"client_pid", "server_pid", "calls"}
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const [name = 'node-client', calls = '3'] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const transport = new StdioClientTransport({
  command: process.execPath,
  args: [path.join(here, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js'), 'stdio'],
  stderr: 'ignore',
});
const client = new Client({ name, version: '1.0.0' });
await client.connect(transport);
for (let i = 0; i < Number(calls); i++) {
  await client.callTool({ name: 'get-sum', arguments: { a: i, b: 1 } });
}
const serverPid = transport.pid;
await client.close();
console.log(JSON.stringify({ client_pid: process.pid, server_pid: serverPid, calls: Number(calls) }));
