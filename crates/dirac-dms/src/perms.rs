//! Who may do what in the catalog: POSIX-like owner/group/other bits on
//! every directory and file, VO isolation, and `FileCatalogManagement` as
//! the catalog administrator's property (mode bits do not bind it, the VO
//! boundary does).

use dirac_core::auth::Identity;

use crate::error::DmsError;
use crate::lfn::Lfn;

/// Mode of new directories and files: umask 022. (DIRAC uses 002, but its
/// default groups hold every user of the VO, which makes every directory
/// writable by the whole VO; a group area is opened with `dchmod`.)
pub const DIR_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;
/// Directories the catalog makes itself (VO roots, `/vo/user/x`).
pub const SYSTEM_MODE: u32 = 0o755;
/// Owner of the directories the catalog makes itself.
pub const SYSTEM_OWNER: &str = "dirac";

/// The caller as the catalog sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub group: String,
    pub vo: String,
    pub admin: bool,
}

impl Caller {
    pub fn from_identity(id: &Identity) -> Self {
        Caller {
            username: id.username.clone(),
            group: id.group.clone(),
            vo: id.vo.clone(),
            admin: id.has("FileCatalogManagement"),
        }
    }

    /// `path` is in the caller's VO.
    pub fn check_vo(&self, path: &Lfn) -> Result<(), DmsError> {
        if path.vo() == self.vo {
            Ok(())
        } else {
            Err(DmsError::PermissionDenied(format!(
                "{path} is outside VO {}",
                self.vo
            )))
        }
    }

    /// The caller's home: `/<vo>/user/<initial>/<username>`.
    pub fn home(&self) -> Option<Lfn> {
        let initial = self.username.chars().next()?;
        Lfn::parse(&format!("/{}/user/{initial}/{}", self.vo, self.username)).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

/// Owner, group and mode of a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Perm {
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

impl Perm {
    pub fn allows(&self, caller: &Caller, want: Want) -> bool {
        if caller.admin {
            return true;
        }
        let bits = if caller.username == self.owner {
            self.mode >> 6
        } else if caller.group == self.group {
            self.mode >> 3
        } else {
            self.mode
        } & 0o7;
        match want {
            Want::Read => bits & 0o4 != 0,
            Want::Write => bits & 0o2 != 0,
        }
    }

    /// `Ok` if allowed, else a `PermissionDenied` naming `path`.
    pub fn check(&self, caller: &Caller, want: Want, path: &str) -> Result<(), DmsError> {
        if self.allows(caller, want) {
            Ok(())
        } else {
            Err(DmsError::PermissionDenied(format!(
                "{} access to {path} denied (owner {}, group {}, mode {:o})",
                match want {
                    Want::Read => "read",
                    Want::Write => "write",
                },
                if self.owner.is_empty() {
                    "-"
                } else {
                    &self.owner
                },
                if self.group.is_empty() {
                    "-"
                } else {
                    &self.group
                },
                self.mode
            )))
        }
    }
}

/// Mode bits a user may set: permission bits only.
pub fn check_mode(mode: u32) -> Result<u32, DmsError> {
    if mode > 0o777 {
        return Err(DmsError::InvalidArgument(format!(
            "mode {mode:o} has bits beyond 0777"
        )));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, group: &str, admin: bool) -> Caller {
        Caller {
            username: user.into(),
            group: group.into(),
            vo: "dteam".into(),
            admin,
        }
    }

    #[test]
    fn classes_and_bits() {
        let p = Perm {
            owner: "alice".into(),
            group: "dteam_user".into(),
            mode: 0o750,
        };
        let alice = caller("alice", "dteam_user", false);
        let bob = caller("bob", "dteam_user", false);
        let eve = caller("eve", "dteam_other", false);
        assert!(p.allows(&alice, Want::Write));
        assert!(p.allows(&bob, Want::Read) && !p.allows(&bob, Want::Write));
        assert!(!p.allows(&eve, Want::Read));
        assert!(
            p.allows(&caller("eve", "x", true), Want::Write),
            "administrator"
        );
        let err = p.check(&eve, Want::Read, "/dteam/x").expect_err("denied");
        assert!(err.to_string().contains("mode 750"), "{err}");
        assert!(check_mode(0o1777).is_err());
    }

    #[test]
    fn vo_isolation_binds_administrators_too() {
        let admin = caller("root", "dteam_admin", true);
        let other = Lfn::parse("/atlas/data").expect("ok");
        assert!(admin.check_vo(&other).is_err());
        assert_eq!(
            caller("alice", "g", false)
                .home()
                .map(|h| h.to_string())
                .as_deref(),
            Some("/dteam/user/a/alice")
        );
    }
}
