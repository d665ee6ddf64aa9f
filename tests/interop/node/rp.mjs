// A relying party built on openid-client v6 (a certified OpenID RP), run against a live
// Bastion by tests/interop/test_openid_client.py.
//
// Input (JSON on stdin): issuer, client_id, client_secret (or null), auth
// ("client_secret_post" | "client_secret_basic" | "none"), redirect_uri, scope, username,
// password. TLS trust comes from NODE_EXTRA_CA_CERTS.
//
// openid-client does the protocol: discovery (with issuer validation), PKCE, the
// authorization response checks (state, RFC 9207 iss), the code grant with ID token
// validation (signature against jwks_uri: non-repudiation checks are enabled), UserInfo with
// the subject check, refresh, introspection and revocation. This script only plays the
// browser (cookies, the login and consent forms) and prints a JSON summary on stdout.

import * as client from 'openid-client'

const input = JSON.parse(await readStdin())

function readStdin () {
  return new Promise((resolve, reject) => {
    let data = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (chunk) => { data += chunk })
    process.stdin.on('end', () => resolve(data))
    process.stdin.on('error', reject)
  })
}

// --- the browser: a cookie jar, Bastion's forms, redirects up to the client ----------------
const jar = new Map()

async function browse (url, init = {}) {
  const headers = new Headers(init.headers ?? {})
  if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '))
  const res = await fetch(url, { ...init, headers, redirect: 'manual' })
  for (const line of res.headers.getSetCookie()) {
    const pair = line.split(';')[0]
    const i = pair.indexOf('=')
    jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim())
  }
  return res
}

const unescape = (s) => s.replace(/&quot;/g, '"').replace(/&#3[49];/g, (m) => m === '&#34;' ? '"' : "'")
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

function attrs (tag) {
  const out = {}
  for (const m of tag.matchAll(/([a-zA-Z_:-]+)="([^"]*)"/g)) out[m[1]] = unescape(m[2])
  return out
}

function onlyForm (html) {
  const forms = [...html.matchAll(/<form\b[^>]*>[\s\S]*?<\/form>/g)].map((m) => m[0])
  if (forms.length !== 1) throw new Error(`expected one form, got ${forms.length}: ${html}`)
  const form = forms[0]
  const fields = {}
  for (const m of form.matchAll(/<input\b[^>]*>/g)) {
    const a = attrs(m[0])
    if (a.type === 'hidden' && a.name) fields[a.name] = a.value ?? ''
  }
  const buttons = [...form.matchAll(/<button\b[^>]*>/g)].map((m) => attrs(m[0]))
    .filter((a) => a.name).map((a) => [a.name, a.value ?? ''])
  const head = attrs(form.match(/<form\b[^>]*>/)[0])
  if (!fields.r || !fields.csrf) throw new Error(`form without r/csrf: ${form}`)
  return { action: head.action, method: (head.method ?? 'get').toLowerCase(), fields, buttons }
}

function sameEndpoint (a, b) {
  const x = new URL(a); const y = new URL(b)
  return x.origin === y.origin && x.pathname === y.pathname
}

async function signInAndConsent (authorizationUrl, steps) {
  const origin = new URL(input.issuer).origin
  let res = await browse(authorizationUrl)
  for (let i = 0; i < 12; i++) {
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      const target = new URL(res.headers.get('location'), res.url || authorizationUrl).href
      if (sameEndpoint(target, input.redirect_uri)) return target
      if (new URL(target).origin !== origin) throw new Error(`unexpected redirect ${target}`)
      res = await browse(target)
      continue
    }
    const body = await res.text()
    if (res.status !== 200) throw new Error(`${res.url}: ${res.status} ${body}`)
    const page = new URL(res.url).pathname
    const form = onlyForm(body)
    const action = new URL(form.action, res.url).href
    const post = (data) => browse(action, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(data).toString()
    })
    if (page === '/login') {
      steps.push('login')
      res = await post({ ...form.fields, username: input.username, password: input.password })
    } else if (page === '/consent') {
      steps.push('consent')
      if (!form.buttons.some(([n, v]) => n === 'decision' && v === 'allow')) {
        throw new Error(`no allow button: ${body}`)
      }
      res = await post({ ...form.fields, decision: 'allow' })
    } else {
      throw new Error(`unexpected page ${res.url}`)
    }
  }
  throw new Error('too many steps before the redirect to the client')
}

// --- the relying party ---------------------------------------------------------------------
async function asError (err) {
  // openid-client throws ResponseBodyError (an OAuth error body), WWWAuthenticateChallengeError
  // (a 401 with WWW-Authenticate; the body is left unread, so read it here), or a local check
  const out = {
    name: err?.name,
    error: err?.error ?? null,
    status: err?.status ?? null,
    code: err?.code ?? null,
    message: String(err?.message ?? err)
  }
  if (err?.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE') {
    out.challenges = err.cause
    try {
      out.body = await err.response.json()
    } catch {
      out.body = null
    }
  }
  return out
}

async function attempt (fn) {
  try {
    return { ok: true, value: await fn() }
  } catch (err) {
    return { ok: false, error: await asError(err) }
  }
}

async function main () {
  const issuer = new URL(input.issuer)
  let config
  if (input.auth === 'client_secret_post') {
    // the documented shorthand: the secret as metadata, client_secret_post by default
    config = await client.discovery(issuer, input.client_id, input.client_secret)
  } else if (input.auth === 'client_secret_basic') {
    config = await client.discovery(issuer, input.client_id, input.client_secret,
      client.ClientSecretBasic(input.client_secret))
  } else if (input.auth === 'none') {
    config = await client.discovery(issuer, input.client_id, undefined, client.None())
  } else {
    throw new Error(`unknown auth ${input.auth}`)
  }
  // also verify ID token signatures against jwks_uri (not only the TLS channel)
  client.enableNonRepudiationChecks(config)
  const meta = config.serverMetadata()
  const summary = {
    discovery: {
      issuer: meta.issuer,
      authorization_endpoint: meta.authorization_endpoint,
      token_endpoint: meta.token_endpoint,
      userinfo_endpoint: meta.userinfo_endpoint,
      revocation_endpoint: meta.revocation_endpoint,
      introspection_endpoint: meta.introspection_endpoint,
      jwks_uri: meta.jwks_uri,
      supportsPKCE: config.serverMetadata().supportsPKCE()
    }
  }

  const codeVerifier = client.randomPKCECodeVerifier()
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier)
  const nonce = client.randomNonce()
  const state = client.randomState()
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: input.redirect_uri,
    scope: input.scope,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    nonce,
    state
  })
  summary.authorization_request = Object.fromEntries(authorizationUrl.searchParams)
  summary.pkce = { verifier_length: codeVerifier.length, challenge: codeChallenge }

  const steps = []
  const callback = await signInAndConsent(authorizationUrl.href, steps)
  summary.steps = steps
  summary.callback = Object.fromEntries(new URL(callback).searchParams)
  summary.callback.code = summary.callback.code ? '<present>' : null

  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: codeVerifier,
    expectedNonce: nonce,
    expectedState: state,
    idTokenExpected: true
  })
  const claims = tokens.claims()
  summary.tokens = {
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expiresIn(),
    has_refresh_token: Boolean(tokens.refresh_token),
    id_token_header: JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url'))
  }
  summary.nonce = nonce
  summary.id_token_claims = claims

  const userinfo = await attempt(() => client.fetchUserInfo(config, tokens.access_token, claims.sub))
  summary.userinfo = userinfo.ok ? { ok: true, value: { ...userinfo.value } } : userinfo
  summary.userinfo_wrong_subject = await attempt(() =>
    client.fetchUserInfo(config, tokens.access_token, 'someone-else'))

  // refresh: openid-client validates the new ID token against the original one
  const refreshed = await attempt(() => client.refreshTokenGrant(config, tokens.refresh_token))
  if (!refreshed.ok) {
    summary.refresh = refreshed
    return summary
  }
  const r = refreshed.value
  summary.refresh = {
    ok: true,
    new_refresh_token: Boolean(r.refresh_token) && r.refresh_token !== tokens.refresh_token,
    new_access_token: r.access_token !== tokens.access_token,
    scope: r.scope,
    id_token_claims: r.id_token ? r.claims() : null
  }
  const rt = r.refresh_token

  const confidential = input.auth !== 'none'
  summary.introspection_before = await attempt(() =>
    client.tokenIntrospection(config, rt, { token_type_hint: 'refresh_token' }))
  summary.revocation = await attempt(() =>
    client.tokenRevocation(config, rt, { token_type_hint: 'refresh_token' }))
  if (summary.revocation.ok) summary.revocation.value = null
  summary.refresh_after_revocation = await attempt(() => client.refreshTokenGrant(config, rt))
  if (summary.refresh_after_revocation.ok) summary.refresh_after_revocation.value = '<tokens>'
  summary.introspection_after = await attempt(() =>
    client.tokenIntrospection(config, rt, { token_type_hint: 'refresh_token' }))
  summary.access_token_introspection_after = await attempt(() =>
    client.tokenIntrospection(config, r.access_token, { token_type_hint: 'access_token' }))
  summary.userinfo_after_revocation = await attempt(() =>
    client.fetchUserInfo(config, r.access_token, claims.sub))
  summary.confidential = confidential

  // last (a replayed code revokes what was issued from it): the code is single use
  summary.code_replay = await attempt(() => client.authorizationCodeGrant(config,
    new URL(callback), { pkceCodeVerifier: codeVerifier, expectedNonce: nonce, expectedState: state }))
  if (summary.code_replay.ok) summary.code_replay.value = '<tokens>'
  return summary
}

try {
  process.stdout.write(JSON.stringify(await main()) + '\n')
} catch (err) {
  process.stderr.write(`${err?.stack ?? err}\n${JSON.stringify(await asError(err))}\n`)
  if (err?.cause) process.stderr.write(`cause: ${JSON.stringify(err.cause)}\n`)
  process.exitCode = 1
}
