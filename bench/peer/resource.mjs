// Peer for benchmark scenario 3 (GET /orders with a Bearer JWT). oidc-provider is
// only an authorization server, so the "peer" resource server is this tiny Node
// server using jose: it validates ES256 JWT access tokens against the provider's
// JWKS (fetched once, then cached by createRemoteJWKSet) and returns 3 fake orders.
//
//   node resource.mjs [PORT] [ISSUER]     (default 3200, http://127.0.0.1:3100)
//
// Env: PORT, HOST (127.0.0.1), ISSUER, AUDIENCE (urn:bench:orders), SCOPE (order:view).
// Checks: signature (ES256 only), typ at+jwt, iss, aud, exp/nbf, scope contains SCOPE.
import { createServer } from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const PORT = Number(process.argv[2] || process.env.PORT || 3200);
const HOST = process.env.HOST || '127.0.0.1';
const ISSUER = process.argv[3] || process.env.ISSUER || 'http://127.0.0.1:3100';
const AUDIENCE = process.env.AUDIENCE || 'urn:bench:orders';
const SCOPE = process.env.SCOPE || 'order:view';

const JWKS = createRemoteJWKSet(new URL(`${ISSUER}/jwks`));
const ORDERS = JSON.stringify([
  { id: 'ord_1001', item: 'widget', quantity: 2, status: 'shipped' },
  { id: 'ord_1002', item: 'gadget', quantity: 1, status: 'processing' },
  { id: 'ord_1003', item: 'gizmo', quantity: 5, status: 'pending' },
]);

function send(res, status, body, extra = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

const server = createServer(async (req, res) => {
  if (req.method !== 'GET' || req.url !== '/orders') return send(res, 404, '{"error":"not_found"}');
  const auth = req.headers.authorization || '';
  if (!auth.startsWith('Bearer ')) {
    return send(res, 401, '{"error":"invalid_token"}', { 'www-authenticate': 'Bearer' });
  }
  try {
    const { payload } = await jwtVerify(auth.slice(7), JWKS, {
      issuer: ISSUER, audience: AUDIENCE, algorithms: ['ES256'], typ: 'at+jwt',
    });
    if (!String(payload.scope || '').split(' ').includes(SCOPE)) {
      return send(res, 403, '{"error":"insufficient_scope"}');
    }
    return send(res, 200, ORDERS);
  } catch {
    return send(res, 401, '{"error":"invalid_token"}', { 'www-authenticate': 'Bearer error="invalid_token"' });
  }
});
server.keepAliveTimeout = 65_000;
server.listen(PORT, HOST, () => console.log(`resource server on http://${HOST}:${PORT}/orders (iss ${ISSUER}, aud ${AUDIENCE})`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
