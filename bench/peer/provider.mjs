// Peer authorization server for the Bastion side-by-side benchmark: oidc-provider
// (npm, certified OpenID provider), one process, no cluster, loopback only.
//
//   node provider.mjs [PORT]          (or PORT=... ; default 3100)
//
// Env: PORT, HOST (127.0.0.1), CLIENT_ID (bench), CLIENT_SECRET (bench-secret),
//      AUDIENCE (urn:bench:orders) -- the resource indicator / JWT "aud".
//
// - ES256 signing key generated at start (published at /jwks).
// - client_credentials and refresh_token (and authorization_code) issue JWT
//   access tokens (typ at+jwt, alg ES256) via features.resourceIndicators.
// - Refresh tokens rotate on every use (rotateRefreshToken: true): single use.
// - Storage: oidc-provider's own in-memory adapter class (lib/adapters/memory_adapter.js)
//   but on an LRU store with a large capacity: the stock default store holds only
//   1000 entries, which would evict a pre-minted pool of 20000 refresh tokens.
// - /interaction/:uid auto-completes login + consent (bench mode, no UI), so that
//   mint_refresh.mjs can drive the authorization code flow to obtain refresh tokens
//   (oidc-provider only issues refresh tokens from code/device/CIBA grants).
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

const PORT = Number(process.argv[2] || process.env.PORT || 3100);
const HOST = process.env.HOST || '127.0.0.1';
const ISSUER = `http://${HOST}:${PORT}`;
const CLIENT_ID = process.env.CLIENT_ID || 'bench';
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'bench-secret';
const AUDIENCE = process.env.AUDIENCE || 'urn:bench:orders';
const SCOPES = 'order:view order:create';

// ES256 signing key, fresh per process.
const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

// In-memory storage (stock adapter class, larger store; see header).
const store = new LRU({ maxSize: Number(process.env.STORE_MAX || 4_000_000) });
const adapter = (model) => new MemoryAdapter(model, store);

const resourceServer = {
  scope: SCOPES,
  audience: AUDIENCE,
  accessTokenFormat: 'jwt',
  accessTokenTTL: 3600,
  jwt: { sign: { alg: 'ES256' } },
};

const provider = new Provider(ISSUER, {
  adapter,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [`http://${HOST}/cb`], // never fetched: mint_refresh.mjs only reads the Location header
    scope: 'openid offline_access', // OIDC scopes; API scopes are governed by getResourceServerInfo
    id_token_signed_response_alg: 'ES256',
  }],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
  scopes: ['openid', 'offline_access'], // OIDC scopes only; API scopes come from the resource server
  ttl: {
    AccessToken: 3600, ClientCredentials: 3600, AuthorizationCode: 60, IdToken: 3600,
    RefreshToken: 14 * 86400, Interaction: 600, Session: 14 * 86400, Grant: 14 * 86400,
  },
  rotateRefreshToken: true, // every refresh token is single use, like Bastion
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // no `resource` parameter needed: everything goes to the one resource server
      defaultResource: () => AUDIENCE,
      // keep the resource (=> JWT format) on refresh even if openid were granted
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== AUDIENCE) throw new errors.InvalidTarget();
        return resourceServer;
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});
provider.proxy = false;

// Bench-mode interaction: log in "bench-user" and grant everything requested.
async function autoInteraction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { params } = details;
    const grant = new provider.Grant({ accountId: 'bench-user', clientId: params.client_id });
    const scopes = String(params.scope || '').split(' ');
    const oidc = scopes.filter((s) => s === 'openid' || s === 'offline_access');
    if (oidc.length) grant.addOIDCScope(oidc.join(' '));
    const rs = scopes.filter((s) => SCOPES.split(' ').includes(s));
    if (rs.length) grant.addResourceScope(AUDIENCE, rs.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, {
      login: { accountId: 'bench-user' },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  } catch (err) {
    res.statusCode = 400;
    res.end(String(err?.message || err));
  }
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) return autoInteraction(req, res);
  return callback(req, res);
});
server.keepAliveTimeout = 65_000;
server.listen(PORT, HOST, () => {
  console.log(`oidc-provider listening on ${ISSUER} (client ${CLIENT_ID}, aud ${AUDIENCE})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
