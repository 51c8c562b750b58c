// Tests only: a real OpenID provider on loopback for tests/test_oidc.py (started by
// tests/fixtures_oidc.py). It is panva's certified `oidc-provider` with its development
// interactions (a login form that takes any name and password, then a consent form),
// dynamic client registration (each test gateway registers its own client), PKCE required
// and RP-initiated logout. People's claims come from the accounts file given on the
// command line: { "<login>": { "preferred_username": ..., "name": ..., "groups": [...] } }.
//
// Two test controls, outside the protocol (paths under /__test/):
//   POST /__test/next-id-token {"mode": "tampered" | "expired" | "wrong-audience" | "wrong-issuer"}
//     the next token response carries an ID token changed that way: "tampered" changes a
//     claim and keeps the signature; the others are re-signed with the provider's real key,
//     so only the claim check can refuse them.
//   POST /__test/rotate-keys
//     a new signing key (new kid) signs from now on; the old one stays published.
//
// Usage: node provider.mjs <port> <accounts.json>; prints "listening <issuer>" when ready.

import http from 'node:http';
import { readFileSync } from 'node:fs';

import * as jose from 'jose';
import Provider from 'oidc-provider';
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const port = Number(process.argv[2]);
const accounts = JSON.parse(readFileSync(process.argv[3], 'utf8'));
// "localhost", while the gateway runs on 127.0.0.1: two sites, as in real life.
const issuer = `http://localhost:${port}`;

async function newKey(n) {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: `test-key-${n}`, alg: 'RS256', use: 'sig' };
}

let keys = [await newKey(1)];
// One in-memory store for every provider instance: clients, sessions and grants outlive a
// key rotation (which builds a new instance with the new key first).
const adapter = createMemoryAdapter(0);
let nextMode = null;

function makeProvider() {
  const provider = new Provider(issuer, {
    adapter,
    jwks: { keys },
    async findAccount(ctx, id) {
      return { accountId: id, async claims() { return { sub: id, ...(accounts[id] || {}) }; } };
    },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups'],
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    cookies: { keys: ['only-for-tests-only-for-tests'] },
    clientDefaults: { token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: 'RS256' },
  });
  provider.use(changeIdToken);
  return provider;
}

async function changeIdToken(ctx, next) {
  await next();
  if (ctx.path !== '/token' || !nextMode || !ctx.body?.id_token) return;
  const mode = nextMode;
  nextMode = null;
  const [header, payload, signature] = ctx.body.id_token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  if (mode === 'tampered') {
    claims.groups = ['cctv-supervisors'];
    const changed = Buffer.from(JSON.stringify(claims)).toString('base64url');
    ctx.body = { ...ctx.body, id_token: `${header}.${changed}.${signature}` };
    return;
  }
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  else if (mode === 'wrong-audience') claims.aud = 'another-client';
  else if (mode === 'wrong-issuer') claims.iss = 'http://127.0.0.1:1';
  const key = await jose.importJWK(keys[0], 'RS256');
  const jwt = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: keys[0].kid, typ: 'JWT' }).sign(key);
  ctx.body = { ...ctx.body, id_token: jwt };
}

let provider = makeProvider();

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks)) : {};
}

const server = http.createServer(async (req, res) => {
  if (req.url.startsWith('/__test/') && req.method === 'POST') {
    const body = await readJson(req);
    if (req.url === '/__test/next-id-token') {
      nextMode = body.mode;
    } else if (req.url === '/__test/rotate-keys') {
      keys = [await newKey(keys.length + 1), ...keys];
      provider = makeProvider();
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(204).end();
    return;
  }
  provider.callback()(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
