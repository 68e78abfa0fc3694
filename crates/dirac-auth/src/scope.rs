//! The scope grammar and the approval decision: plain functions over the
//! registry, no IO.
//!
//! A scope is `vo:<vo> [group:<group>] [property:<P>]…`: exactly one `vo:`
//! (it must exist), at most one `group:` (default: the VO's `DefaultGroup`),
//! any number of `property:`. Anything else is refused.
//!
//! Granted properties are the group's properties plus the requested ones,
//! and a requested property must be held by one of the user's groups
//! (DiracX's behaviour: requesting a property adds it, it never removes the
//! group's own).

use dirac_core::auth::Identity;
use dirac_core::config::{DiracConfig, GroupConfig, VoConfig};

/// A parsed and checked scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub vo: String,
    pub group: String,
    /// Requested extra properties, deduplicated, in request order.
    pub properties: Vec<String>,
}

impl std::fmt::Display for Scope {
    /// The normalised scope string (the group always spelled out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vo:{} group:{}", self.vo, self.group)?;
        for p in &self.properties {
            write!(f, " property:{p}")?;
        }
        Ok(())
    }
}

/// At most this many characters of client input are echoed in messages.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Parse `scope` and check it against the registry.
pub fn parse(scope: &str, config: &DiracConfig) -> Result<Scope, String> {
    let mut vo: Option<&str> = None;
    let mut group: Option<&str> = None;
    let mut properties: Vec<String> = Vec::new();
    for token in scope.split_whitespace() {
        let (kind, value) = token
            .split_once(':')
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| format!("unknown scope token '{}'", clip(token)))?;
        match kind {
            "vo" if vo.is_some() => return Err("exactly one vo:<vo> scope is allowed".into()),
            "vo" => vo = Some(value),
            "group" if group.is_some() => {
                return Err("at most one group:<group> scope is allowed".into());
            }
            "group" => group = Some(value),
            "property" => {
                if !properties.iter().any(|p| p == value) {
                    properties.push(value.to_string());
                }
            }
            _ => return Err(format!("unknown scope token '{}'", clip(token))),
        }
    }
    let vo = vo.ok_or("a vo:<vo> scope is required")?;
    let voc = config
        .registry
        .vos
        .get(vo)
        .ok_or_else(|| format!("unknown VO '{}'", clip(vo)))?;
    let group = group.unwrap_or(&voc.default_group);
    if !voc.groups.contains_key(group) {
        return Err(format!("unknown group '{}' in VO '{vo}'", clip(group)));
    }
    for p in &properties {
        if !voc.groups.values().any(|g| g.properties.contains(p)) {
            return Err(format!(
                "property '{}' is not granted by any group of VO '{vo}'",
                clip(p)
            ));
        }
    }
    Ok(Scope {
        vo: vo.to_string(),
        group: group.to_string(),
        properties,
    })
}

/// The identity `username` gets for `scope`, or why it is refused.
pub fn grant(config: &DiracConfig, scope: &Scope, username: &str) -> Result<Identity, String> {
    let voc = vo_of(config, scope)?;
    if !voc.users.contains_key(username) {
        return Err(format!(
            "user '{}' is not registered in VO '{}'",
            clip(username),
            scope.vo
        ));
    }
    grant_with(voc, scope, username, |g| {
        g.users.iter().any(|u| u == username)
    })
    .map_err(|not_member| {
        not_member.unwrap_or_else(|| {
            format!(
                "user '{}' is not a member of group '{}'",
                clip(username),
                scope.group
            )
        })
    })
}

fn vo_of<'a>(config: &'a DiracConfig, scope: &Scope) -> Result<&'a VoConfig, String> {
    config
        .registry
        .vos
        .get(&scope.vo)
        .ok_or_else(|| format!("unknown VO '{}'", scope.vo))
}

/// The identity for `scope` when `member` says which groups the user is in:
/// the requested group must be one, and each requested property must be
/// held by one. `Err(None)`: the user is not in the requested group.
fn grant_with(
    voc: &VoConfig,
    scope: &Scope,
    username: &str,
    member: impl Fn(&GroupConfig) -> bool,
) -> Result<Identity, Option<String>> {
    if voc.users.get(username).is_some_and(|u| u.suspended) {
        return Err(Some(format!("user '{}' is suspended", clip(username))));
    }
    let group = voc
        .groups
        .get(&scope.group)
        .ok_or_else(|| Some(format!("unknown group '{}'", scope.group)))?;
    if !member(group) {
        return Err(None);
    }
    let mut properties = group.properties.clone();
    for p in &scope.properties {
        if !voc
            .groups
            .values()
            .filter(|g| member(g))
            .any(|g| g.properties.contains(p))
        {
            return Err(Some(format!(
                "property '{p}' is not held by any group of user '{}'",
                clip(username)
            )));
        }
        if !properties.contains(p) {
            properties.push(p.clone());
        }
    }
    Ok(Identity {
        sub: format!("{}:{username}", scope.vo),
        username: username.to_string(),
        vo: scope.vo.clone(),
        group: scope.group.clone(),
        properties,
        job: None,
    })
}

/// The DIRAC user name of the IdP subject `idp_sub` in `vo`: the registered
/// user whose `Sub` it is, else `preferred_username` (or the subject) when
/// no registered user has that name, so an IdP account can never take a
/// registered user's name by choosing it.
pub fn federated_user(
    config: &DiracConfig,
    vo: &str,
    idp_sub: &str,
    preferred_username: Option<&str>,
) -> Result<String, String> {
    let voc = config
        .registry
        .vos
        .get(vo)
        .ok_or_else(|| format!("unknown VO '{vo}'"))?;
    if let Some((name, _)) = voc
        .users
        .iter()
        .find(|(_, u)| u.sub.as_deref() == Some(idp_sub))
    {
        return Ok(name.clone());
    }
    let name = preferred_username.unwrap_or(idp_sub);
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if !valid {
        return Err(format!(
            "the identity provider names the user '{}', not a usable DIRAC user name",
            clip(name)
        ));
    }
    if voc.users.contains_key(name) {
        return Err(format!(
            "user '{name}' of VO '{vo}' is registered without this identity provider \
             subject ('{}'): set its Sub",
            clip(idp_sub)
        ));
    }
    Ok(name.to_string())
}

/// The identity of a federated user: membership of the requested group
/// comes from the IdP's group claim (`IdPRole`) or from the registry's
/// `Users`; users the IdP vouches for need not be registered.
pub fn grant_federated(
    config: &DiracConfig,
    scope: &Scope,
    username: &str,
    claim_groups: &[String],
) -> Result<Identity, String> {
    let voc = vo_of(config, scope)?;
    let member = |g: &GroupConfig| {
        g.idp_role
            .as_ref()
            .is_some_and(|r| claim_groups.contains(r))
            || g.users.iter().any(|u| u == username)
    };
    grant_with(voc, scope, username, member).map_err(|not_member| {
        not_member.unwrap_or_else(|| {
            let role = voc
                .groups
                .get(&scope.group)
                .and_then(|g| g.idp_role.as_ref());
            format!(
                "the identity provider does not make '{}' a member of group '{}'{}",
                clip(username),
                scope.group,
                role.map(|r| format!(" (needs {r})")).unwrap_or_default()
            )
        })
    })
}

/// The identity a refresh grants again. For a VO with an identity
/// provider the group claim seen at login is not asked again: the session
/// keeps a group while the registry still maps it to an IdP role (or lists
/// the user) and the user is not suspended.
pub fn regrant(config: &DiracConfig, scope: &Scope, username: &str) -> Result<Identity, String> {
    let voc = vo_of(config, scope)?;
    if voc.idp.is_none() {
        return grant(config, scope, username);
    }
    let roles: Vec<String> = voc
        .groups
        .values()
        .filter_map(|g| g.idp_role.clone())
        .collect();
    grant_federated(config, scope, username, &roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DiracConfig {
        let yaml = r"
Registry:
  VOs:
    lhcb:
      DefaultGroup: lhcb_user
      Users:
        alice: {}
        bob: {}
        eve: {Suspended: true}
      Groups:
        lhcb_user: {Properties: [NormalUser], Users: [alice, bob, eve]}
        lhcb_prod: {Properties: [NormalUser, ProductionManagement], Users: [alice]}
";
        DiracConfig::from_yaml(yaml, "test", &std::collections::BTreeMap::new()).expect("config")
    }

    fn check(scope: &str, expected: Result<&str, &str>) {
        let got = parse(scope, &config()).map(|s| s.to_string());
        match expected {
            Ok(s) => assert_eq!(got.as_deref(), Ok(s), "{scope}"),
            Err(fragment) => {
                let err = got.expect_err(scope);
                assert!(err.contains(fragment), "{scope}: {err}");
            }
        }
    }

    #[test]
    fn scopes() {
        check("vo:lhcb", Ok("vo:lhcb group:lhcb_user"));
        check(
            "  vo:lhcb   group:lhcb_prod ",
            Ok("vo:lhcb group:lhcb_prod"),
        );
        check(
            "vo:lhcb property:ProductionManagement property:ProductionManagement",
            Ok("vo:lhcb group:lhcb_user property:ProductionManagement"),
        );
        check("", Err("vo:<vo> scope is required"));
        check("group:lhcb_user", Err("vo:<vo> scope is required"));
        check("vo:lhcb vo:lhcb", Err("exactly one"));
        check("vo:atlas", Err("unknown VO 'atlas'"));
        check("vo:lhcb group:nope", Err("unknown group 'nope'"));
        check("vo:lhcb group:a group:b", Err("at most one"));
        check("vo:lhcb openid", Err("unknown scope token 'openid'"));
        check("vo:lhcb vo:", Err("unknown scope token 'vo:'"));
        check("vo:lhcb colour:red", Err("unknown scope token"));
        check("vo:lhcb property:Operator", Err("not granted by any group"));
    }

    #[test]
    fn grants() {
        let c = config();
        let s = |text: &str| parse(text, &c).expect("scope");
        let id = grant(&c, &s("vo:lhcb"), "bob").expect("bob");
        assert_eq!(id.sub, "lhcb:bob");
        assert_eq!(id.properties, ["NormalUser"]);
        let id = grant(&c, &s("vo:lhcb property:ProductionManagement"), "alice").expect("alice");
        assert_eq!(id.group, "lhcb_user");
        assert_eq!(id.properties, ["NormalUser", "ProductionManagement"]);
        let refused = [
            ("vo:lhcb group:lhcb_prod", "bob", "not a member"),
            ("vo:lhcb property:ProductionManagement", "bob", "not held"),
            ("vo:lhcb", "mallory", "not registered"),
            ("vo:lhcb", "eve", "suspended"),
        ];
        for (scope, user, fragment) in refused {
            let err = grant(&c, &s(scope), user).expect_err(user);
            assert!(err.contains(fragment), "{err}");
        }
    }

    #[test]
    fn federated_grants() {
        let yaml = r"
Registry:
  VOs:
    dteam:
      DefaultGroup: dteam_user
      IdP: { URL: 'https://idp.example.org', ClientID: dirac }
      Users:
        eve: {Suspended: true}
        carol: {Sub: idp-42}
      Groups:
        dteam_user: {Properties: [NormalUser], Users: [], IdPRole: /dteam}
        dteam_admin: {Properties: [JobAdministrator], Users: [], IdPRole: /dteam/admin}
        dteam_ops: {Properties: [Operator], Users: [carol]}
";
        let c = DiracConfig::from_yaml(yaml, "test", &std::collections::BTreeMap::new())
            .expect("config");
        let s = |text: &str| parse(text, &c).expect("scope");
        let claims = ["/dteam".to_string()];
        let id = grant_federated(&c, &s("vo:dteam"), "bob", &claims).expect("bob");
        assert_eq!(
            (id.sub.as_str(), id.group.as_str()),
            ("dteam:bob", "dteam_user")
        );
        let err = grant_federated(&c, &s("vo:dteam group:dteam_admin"), "bob", &claims)
            .expect_err("not an admin");
        assert!(err.contains("needs /dteam/admin"), "{err}");
        let err = grant_federated(&c, &s("vo:dteam"), "eve", &claims).expect_err("suspended");
        assert!(err.contains("suspended"), "{err}");
        // Names come from the registry's Sub, never from a chosen name.
        assert_eq!(
            federated_user(&c, "dteam", "idp-42", Some("carol")).as_deref(),
            Ok("carol")
        );
        let err = federated_user(&c, "dteam", "idp-666", Some("carol")).expect_err("taken");
        assert!(err.contains("registered without"), "{err}");
        assert_eq!(
            federated_user(&c, "dteam", "idp-7", Some("dave")).as_deref(),
            Ok("dave")
        );
        assert_eq!(
            federated_user(&c, "dteam", "idp-7", None).as_deref(),
            Ok("idp-7")
        );
        assert!(federated_user(&c, "dteam", "x", Some("a/../b")).is_err());
        // Registry membership still counts for groups without a role.
        assert!(grant_federated(&c, &s("vo:dteam group:dteam_ops"), "carol", &[]).is_ok());
        // A refresh keeps IdP-mapped groups, not groups the registry dropped.
        assert!(regrant(&c, &s("vo:dteam group:dteam_admin"), "bob").is_ok());
        assert!(regrant(&c, &s("vo:dteam group:dteam_ops"), "bob").is_err());
        assert!(regrant(&c, &s("vo:dteam"), "eve").is_err());
    }
}
