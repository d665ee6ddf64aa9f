// Mint N refresh tokens from the running provider.mjs by driving the authorization
// code flow programmatically (oidc-provider issues refresh tokens only from the code,
// device or CIBA grants, with offline_access + prompt=consent).
//
//   node mint_refresh.mjs N OUTFILE [BASE_URL] [CONCURRENCY]
//   e.g. node mint_refresh.mjs 20000 /tmp/peer_refresh.txt http://127.0.0.1:3100 32
//
// One flow = 4 requests: GET /auth -> GET /interaction/:uid (auto login+consent,
// see provider.mjs) -> GET /auth/:uid (resume, 303 with ?code=) -> POST /token.
// Writes one refresh token per line. Env CLIENT_ID / CLIENT_SECRET as for provider.mjs.
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const [N = '1000', OUT = 'refresh_tokens.txt', BASE = 'http://127.0.0.1:3100', CONC = '32'] = process.argv.slice(2);
const CLIENT_ID = process.env.CLIENT_ID || 'bench';
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'bench-secret';
const REDIRECT_URI = `http://${new URL(BASE).hostname}/cb`;
const BASIC = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;

// Minimal cookie jar: oidc-provider scopes its cookies by path; we just send all of them.
function absorb(jar, res) {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
}
const cookieHeader = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

async function hop(url, jar) {
  const res = await fetch(new URL(url, BASE), { redirect: 'manual', headers: { cookie: cookieHeader(jar) } });
  absorb(jar, res);
  await res.arrayBuffer();
  const loc = res.headers.get('location');
  if (res.status !== 303 && res.status !== 302) throw new Error(`${url}: HTTP ${res.status}`);
  return loc;
}

async function mintOne() {
  const jar = new Map();
  const verifier = randomBytes(32).toString('base64url');
  const q = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'offline_access order:view order:create',
    prompt: 'consent',
    resource: process.env.AUDIENCE || 'urn:bench:orders',
    state: randomBytes(8).toString('hex'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });
  const interaction = await hop(`/auth?${q}`, jar);
  const resume = await hop(interaction, jar);
  const cb = new URL(await hop(resume, jar));
  const code = cb.searchParams.get('code');
  if (!code) throw new Error(`no code: ${cb}`);
  const res = await fetch(new URL('/token', BASE), {
    method: 'POST',
    headers: { authorization: BASIC, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier }),
  });
  const body = await res.json();
  if (!res.ok || !body.refresh_token) throw new Error(`token: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.refresh_token;
}

const total = Number(N);
const tokens = [];
let next = 0;
const t0 = Date.now();
async function worker() {
  while (next < total) {
    next += 1;
    tokens.push(await mintOne());
    if (tokens.length % 5000 === 0) console.error(`  ${tokens.length}/${total}`);
  }
}
await Promise.all(Array.from({ length: Math.min(Number(CONC), total) }, worker));
writeFileSync(OUT, `${tokens.join('\n')}\n`);
const s = (Date.now() - t0) / 1000;
console.log(`minted ${tokens.length} refresh tokens into ${OUT} in ${s.toFixed(1)}s (${(tokens.length / s).toFixed(0)}/s)`);
