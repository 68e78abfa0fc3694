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
use dirac_core::config::DiracConfig;

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
    let voc = config
        .registry
        .vos
        .get(&scope.vo)
        .ok_or_else(|| format!("unknown VO '{}'", scope.vo))?;
    let user = voc.users.get(username).ok_or_else(|| {
        format!(
            "user '{}' is not registered in VO '{}'",
            clip(username),
            scope.vo
        )
    })?;
    if user.suspended {
        return Err(format!("user '{username}' is suspended"));
    }
    let group = voc
        .groups
        .get(&scope.group)
        .ok_or_else(|| format!("unknown group '{}'", scope.group))?;
    if !group.users.iter().any(|u| u == username) {
        return Err(format!(
            "user '{username}' is not a member of group '{}'",
            scope.group
        ));
    }
    let mut properties = group.properties.clone();
    for p in &scope.properties {
        let allowed = voc
            .groups
            .values()
            .filter(|g| g.users.iter().any(|u| u == username))
            .any(|g| g.properties.contains(p));
        if !allowed {
            return Err(format!(
                "property '{p}' is not held by any group of user '{username}'"
            ));
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
}
