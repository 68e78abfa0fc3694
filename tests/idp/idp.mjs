// A real OpenID Connect provider for the federation tests (panva's
// oidc-provider): code flow with PKCE, a confidential client for the
// AuthServer, WLCG-style group claims, its development login form,
// rotating refresh tokens (offline_access), and an RFC 8693 token
// exchange that mints WLCG storage tokens, as INDIGO IAM does.
//
// Usage: node idp.mjs PORT REDIRECT_URI
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const [port, redirect] = process.argv.slice(2);
// Account id (the ID token's sub) -> groups, and the name it claims.
const accounts = {
  alice: { groups: ['/dteam'] },
  bob: { groups: ['/dteam', '/dteam/admin'] },
  eve: { groups: ['/other'] },
  // Claims a registered user's name.
  mallory: { groups: ['/dteam', '/dteam/admin'], name: 'bob' },
};

// One RS256 key signs ID tokens, JWT access tokens and exchanged tokens.
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: 'idp-rs256', alg: 'RS256', use: 'sig' };
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  jwks: { keys: [signingJwk] },
  clients: [{
    client_id: 'dirac-auth',
    client_secret: 'dirac-auth-secret',
    redirect_uris: [redirect],
    grant_types: ['authorization_code', 'client_credentials', 'refresh_token', TOKEN_EXCHANGE],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['openid', 'offline_access', 'profile', 'wlcg.groups'],
  // Refresh tokens for the AuthServer's TokenManager, rotated on each use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  claims: { openid: ['sub'], profile: ['preferred_username'], 'wlcg.groups': ['wlcg.groups'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    // Pilot submission tokens (WLCG profile): client credentials, audience
    // = the CE named by the resource indicator, JWT access tokens.
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'compute.create compute.read compute.modify compute.cancel',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 1200,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        const { groups, name } = accounts[id];
        return { sub: id, preferred_username: name ?? id, 'wlcg.groups': groups };
      },
    };
  },
  // Consent is not part of what is tested: grant the requested scopes.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid offline_access profile wlcg.groups');
    grant.addOIDCClaims(['preferred_username', 'wlcg.groups']);
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);

// RFC 8693: a user's access token of this IdP for a storage token. Storage
// paths are granted under the user's own VO groups only (/dteam/... for a
// member of /dteam).
provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const fail = (error, error_description) => {
    ctx.status = 400;
    ctx.body = { error, error_description };
  };
  const { subject_token, subject_token_type, audience, scope } = ctx.oidc.params;
  if (subject_token_type !== ACCESS_TOKEN_TYPE) {
    return fail('invalid_request', 'subject_token_type must be an access token');
  }
  const subject = await ctx.oidc.provider.AccessToken.find(subject_token);
  if (!subject || subject.isExpired || subject.clientId !== ctx.oidc.client.clientId) {
    return fail('invalid_grant', 'unknown or expired subject token');
  }
  const groups = accounts[subject.accountId]?.groups ?? [];
  const requested = (scope ?? '').split(' ').filter(Boolean);
  const allowed = (s) => {
    const m = /^storage\.(read|create|modify|stage):(\/\S*)$/.exec(s);
    return m && !m[2].split('/').includes('..')
      && groups.some((g) => m[2] === g || m[2].startsWith(`${g}/`));
  };
  const refused = requested.find((s) => !allowed(s));
  if (!requested.length || refused) {
    return fail('invalid_scope', `${refused ?? 'no scope'} is not granted to ${subject.accountId}`);
  }
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({
    scope: requested.join(' '), 'wlcg.ver': '1.0', client_id: ctx.oidc.client.clientId,
  })
    .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'at+jwt' })
    .setIssuer(issuer)
    .setSubject(subject.accountId)
    .setAudience(audience || 'https://wlcg.cern.ch/jwt/v1/any')
    .setIssuedAt(now)
    .setExpirationTime(now + 1200)
    .setJti(randomUUID())
    .sign(privateKey);
  ctx.body = {
    access_token: token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer',
    expires_in: 1200, scope: requested.join(' '),
  };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope']);

provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
