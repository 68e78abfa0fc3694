// A real OpenID Connect provider for the federation tests (panva's
// oidc-provider): code flow with PKCE, a confidential client for the
// AuthServer, WLCG-style group claims, and its development login form.
//
// Usage: node idp.mjs PORT REDIRECT_URI
import Provider from 'oidc-provider';

const [port, redirect] = process.argv.slice(2);
const accounts = {
  alice: ['/dteam'],
  bob: ['/dteam', '/dteam/admin'],
  eve: ['/other'],
};

const configuration = {
  clients: [{
    client_id: 'dirac-auth',
    client_secret: 'dirac-auth-secret',
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['openid', 'profile', 'wlcg.groups'],
  claims: { openid: ['sub'], profile: ['preferred_username'], 'wlcg.groups': ['wlcg.groups'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, 'wlcg.groups': accounts[id] };
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
