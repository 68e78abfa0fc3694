// A real OpenID Connect provider for the federation tests (panva's
// oidc-provider): code flow with PKCE, a confidential client for the
// AuthServer, WLCG-style group claims, and its development login form.
//
// Usage: node idp.mjs PORT REDIRECT_URI
import Provider from 'oidc-provider';

const [port, redirect] = process.argv.slice(2);
// Account id (the ID token's sub) -> groups, and the name it claims.
const accounts = {
  alice: { groups: ['/dteam'] },
  bob: { groups: ['/dteam', '/dteam/admin'] },
  eve: { groups: ['/other'] },
  // Claims a registered user's name.
  mallory: { groups: ['/dteam', '/dteam/admin'], name: 'bob' },
};

const configuration = {
  clients: [{
    client_id: 'dirac-auth',
    client_secret: 'dirac-auth-secret',
    redirect_uris: [redirect],
    grant_types: ['authorization_code', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['openid', 'profile', 'wlcg.groups'],
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
    grant.addOIDCScope('openid profile wlcg.groups');
    grant.addOIDCClaims(['preferred_username', 'wlcg.groups']);
    await grant.save();
    return grant;
  },
};

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
