// oidc-provider as postern's real OAuth2 peer, on loopback, plain HTTP.
// Environment: PORT, TTL (access token lifetime, seconds), KEY_DIR (where the
// JWT signing key's public half is written for Dovecot), PID_FILE.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');

(async () => {
  const { default: Provider } = await import('oidc-provider');
  const port = Number(process.env.PORT || 9000);
  const ttl = Number(process.env.TTL || 3600);
  const shortTtl = Number(process.env.SHORT_TTL || 4);
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'postern-test-key';
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  if (process.env.KEY_DIR) {
    const pem = publicKey.export({ format: 'pem', type: 'spki' });
    for (const azp of ['default', 'jwt-client', 'basic-client', 'post-client', 'short-client', 'public-client']) {
      const dir = path.join(process.env.KEY_DIR, azp, 'RS256');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, kid), pem);
    }
  }
  const grants = ['client_credentials', 'authorization_code', 'refresh_token',
    'urn:ietf:params:oauth:grant-type:device_code'];
  const redirect = ['http://127.0.0.1/', 'http://localhost/'];
  const clients = [
    { client_id: 'basic-client', client_secret: 'basic-secret~1', token_endpoint_auth_method: 'client_secret_basic',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'post-client', client_secret: 'post-secret~2', token_endpoint_auth_method: 'client_secret_post',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'jwt-client', client_secret: 'jwt-secret~3', token_endpoint_auth_method: 'client_secret_post',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'short-client', client_secret: 'short-secret~4', token_endpoint_auth_method: 'client_secret_post',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'revoke-a', client_secret: 'revoke-secret~5', token_endpoint_auth_method: 'client_secret_post',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'revoke-b', client_secret: 'revoke-secret~5', token_endpoint_auth_method: 'client_secret_post',
      grant_types: grants, redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail',
      'urn:postern:mailbox': 'sender@example.com' },
    { client_id: 'public-client', token_endpoint_auth_method: 'none', application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail' },
    // Tokens of short-public live SHORT_TTL seconds and its refresh tokens
    // rotate (a public client): the many-instances tests.
    { client_id: 'short-public', token_endpoint_auth_method: 'none', application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: redirect, response_types: ['code'], scope: 'openid offline_access mail' },
    { client_id: 'dovecot', client_secret: 'dovecot-secret', token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [], redirect_uris: [], response_types: [] },
  ];
  const provider = new Provider(issuer, {
    clients,
    extraClientMetadata: { properties: ['urn:postern:mailbox'] },
    jwks: { keys: [jwk] },
    scopes: ['openid', 'offline_access', 'mail'],
    pkce: { required: (ctx, client) => client.tokenEndpointAuthMethod === 'none' },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      deviceFlow: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource === 'urn:postern:jwt') {
            return { scope: 'mail', audience: resource, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
          }
          throw new (require('oidc-provider').errors.InvalidTarget)();
        },
      },
    },
    formats: {
      customizers: {
        // Dovecot 2.3 accepts `typ: JWT` only.
        jwt: (ctx, token, jwt) => { jwt.header = { ...jwt.header, typ: 'JWT' }; },
      },
    },
    extraTokenClaims: (ctx, token) => {
      if (token.kind === 'ClientCredentials' || token.clientId && !token.accountId) {
        const client = ctx && ctx.oidc && ctx.oidc.client;
        return { username: (client && client['urn:postern:mailbox']) || 'sender@example.com' };
      }
      return { username: token.accountId };
    },
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: (ctx, token, client) => (client && client.clientId === 'short-public' ? shortTtl : ttl),
      // short-client's tokens live SHORT_TTL seconds (expiry tests).
      ClientCredentials: (ctx, token, client) => (client && client.clientId === 'short-client' ? shortTtl : ttl),
      RefreshToken: 86400,
      Interaction: 600,
      Session: 86400,
      Grant: 86400,
      DeviceCode: 600,
    },
    async findAccount(ctx, id) {
      return { accountId: id, async claims() { return { sub: id, email: id }; } };
    },
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
  });
  provider.proxy = false;

  // Sign-in and consent without a browser: log in as login_hint (or
  // user@example.com) and grant everything requested.
  const interactions = async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    if (prompt.name === 'login') {
      return provider.interactionFinished(req, res, { login: { accountId: params.login_hint || 'user@example.com' } }, { mergeWithLastSubmission: false });
    }
    const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  };
  // Device flow: approve the user code at once as user@example.com.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  // Test hook: /revoke-client/ID destroys every client-credentials token
  // issued to that client so far (a server-side revocation).
  const issued = new Map();
  provider.on('client_credentials.saved', (token) => {
    if (!issued.has(token.clientId)) issued.set(token.clientId, []);
    issued.get(token.clientId).push(token);
  });
  // Test hook: /stats/ID counts token requests by outcome and grant type.
  const stats = new Map();
  // Also by grant (/stats/grant:ID): a minted refresh token's own count,
  // unaffected by other tests using the same client.
  const count = (ctx, outcome) => {
    const id = (ctx.oidc && ctx.oidc.client && ctx.oidc.client.clientId) || '?';
    const grant = (ctx.oidc && ctx.oidc.params && ctx.oidc.params.grant_type) || '?';
    const rt = ctx.oidc && ctx.oidc.entities && ctx.oidc.entities.RefreshToken;
    const keys = [id];
    if (rt && rt.grantId) keys.push(`grant:${rt.grantId}`);
    for (const key of keys) {
      if (!stats.has(key)) stats.set(key, {});
      const s = stats.get(key);
      const k = `${outcome}:${grant}`;
      s[k] = (s[k] || 0) + 1;
    }
  };
  provider.on('grant.success', (ctx) => count(ctx, 'success'));
  provider.on('grant.error', (ctx, err) => { count(ctx, `error-${err.error || 'other'}`); });
  const callback = provider.callback();
  const server = http.createServer(async (req, res) => {
    try {
      if (req.url.startsWith('/interaction/')) return await interactions(req, res);
      if (req.url.startsWith('/revoke-client/')) {
        const id = decodeURIComponent(req.url.slice('/revoke-client/'.length));
        const tokens = issued.get(id) || [];
        for (const t of tokens) await t.destroy();
        issued.set(id, []);
        res.end(`revoked ${tokens.length}`);
        return;
      }
      if (req.url.startsWith('/stats/')) {
        const id = decodeURIComponent(req.url.slice('/stats/'.length));
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(stats.get(id) || {}));
        return;
      }
      // Test hook: /mint-refresh/ID/ACCOUNT issues a refresh token for that
      // client and account, as an authorization-code flow would have.
      if (req.url.startsWith('/mint-refresh/')) {
        const [id, account] = req.url.slice('/mint-refresh/'.length).split('/').map(decodeURIComponent);
        const client = await provider.Client.find(id);
        if (!client) { res.statusCode = 404; return res.end('no such client'); }
        const scope = 'openid offline_access mail';
        const grant = new provider.Grant({ accountId: account, clientId: id });
        grant.addOIDCScope(scope);
        const grantId = await grant.save();
        const rt = new provider.RefreshToken({ client, accountId: account, grantId, scope, gty: 'authorization_code', authTime: Math.floor(Date.now() / 1000) });
        const value = await rt.save();
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ refresh_token: value, grant: `grant:${grantId}` }));
        return;
      }
      if (req.url.startsWith('/approve-device/')) {
        const userCode = decodeURIComponent(req.url.slice('/approve-device/'.length));
        const code = await provider.DeviceCode.findByUserCode(userCode.replace(/-/g, ''), { ignoreExpiration: true })
          || await provider.DeviceCode.findByUserCode(userCode, { ignoreExpiration: true });
        if (!code) { res.statusCode = 404; return res.end('no such user code'); }
        const grant = new provider.Grant({ accountId: 'user@example.com', clientId: code.clientId });
        grant.addOIDCScope(code.scope || 'openid offline_access mail');
        code.grantId = await grant.save();
        code.accountId = 'user@example.com';
        code.scope = code.scope || 'openid offline_access mail';
        await code.save();
        res.end('approved');
        return;
      }
      return callback(req, res);
    } catch (e) {
      console.error(e);
      res.statusCode = 500;
      res.end(String(e));
    }
  });
  server.listen(port, '127.0.0.1', () => {
    if (process.env.PID_FILE) fs.writeFileSync(process.env.PID_FILE, String(process.pid));
    console.log(`oidc-provider listening on ${issuer}`);
  });
})().catch((e) => { console.error(e); process.exit(1); });
