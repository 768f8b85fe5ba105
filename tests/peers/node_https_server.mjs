// An MCP server in Node (the official @modelcontextprotocol/sdk) over
// Streamable HTTP behind Node's own HTTPS: Node links OpenSSL statically,
// so its TLS plaintext is only visible through probes on the `node`
// executable itself.
//
// Usage: node node_https_server.mjs PORT CERT KEY [NAME]
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const [port, cert, key, name = 'node-https-server'] = process.argv.slice(2);

function build() {
  const server = new McpServer({ name, version: '1.0.0' });
  server.registerTool('whoami', { description: 'The server process id' }, async () => ({
    content: [{ type: 'text', text: String(process.pid) }],
  }));
  server.registerTool(
    'add',
    { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
  );
  server.registerTool(
    'refuse',
    { description: 'Fails with isError', inputSchema: { reason: z.string() } },
    async ({ reason }) => ({ content: [{ type: 'text', text: reason }], isError: true }),
  );
  return server;
}

const transports = new Map();

const httpsServer = https.createServer(
  { cert: readFileSync(cert), key: readFileSync(key) },
  async (req, res) => {
    try {
      let body = '';
      for await (const chunk of req) body += chunk;
      const parsed = body ? JSON.parse(body) : undefined;
      const sid = req.headers['mcp-session-id'];
      let transport = sid ? transports.get(sid) : undefined;
      if (!transport) {
        if (req.method !== 'POST' || !isInitializeRequest(parsed)) {
          res.writeHead(sid ? 404 : 400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'No session' } }));
          return;
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => transports.set(id, transport),
        });
        transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
        await build().connect(transport);
      }
      await transport.handleRequest(req, res, parsed);
    } catch (err) {
      console.error(err);
      if (!res.headersSent) res.writeHead(500).end();
    }
  },
);

httpsServer.listen(Number(port), '127.0.0.1', () => {
  console.error(`${name} listening on 127.0.0.1:${port} (pid ${process.pid})`);
});
