//! The installation's secrets: the token signing key (and the retired keys
//! that still verify), the pilot-secret pepper and the TokenManager's vault
//! key. The embedded installation makes them once in its data directory;
//! with `Services.Auth.KeysDir` (a Kubernetes Secret shared by every
//! replica) they are read from there and never made, so replicas can never
//! disagree on them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use dirac_core::auth::TokenIssuer;
use dirac_core::config::DiracConfig;

pub struct Keys {
    dir: PathBuf,
    /// Made when missing (the embedded installation), or only read.
    create: bool,
}

impl Keys {
    pub fn new(data_dir: &Path, config: &DiracConfig) -> Self {
        match &config.services.auth.keys_dir {
            Some(dir) => Keys {
                dir: dir.clone(),
                create: false,
            },
            None => Keys {
                dir: data_dir.to_path_buf(),
                create: true,
            },
        }
    }

    fn signing_key(&self) -> PathBuf {
        self.dir.join("signing-key.pem")
    }

    /// Retired keys: `retired-keys/*.pem` in the data directory; in a keys
    /// directory every other `*.pem` beside `signing-key.pem` (a Secret's
    /// keys cannot name subdirectories).
    fn retired_keys(&self) -> PathBuf {
        if self.create {
            self.dir.join("retired-keys")
        } else {
            self.dir.clone()
        }
    }

    fn prepare(&self) -> anyhow::Result<()> {
        if self.create {
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("create {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// The signing ring: the current key and the retired ones.
    pub fn issuer(&self, config: &DiracConfig) -> anyhow::Result<TokenIssuer> {
        self.prepare()?;
        let auth = &config.services.auth;
        TokenIssuer::load_ring(
            &self.signing_key(),
            &self.retired_keys(),
            self.create.then_some(auth.signing_algorithm),
            &auth.issuer,
            &auth.audience,
        )
        .with_context(|| self.origin())
    }

    /// `diracd rotate-key`: only for keys this installation made.
    pub fn rotate(&self, config: &DiracConfig) -> anyhow::Result<TokenIssuer> {
        if !self.create {
            bail!(
                "the keys come from Services.Auth.KeysDir ({}): rotate them in the Secret, \
                 in two rollouts (add the new key as another *.pem and restart everything; \
                 then make it signing-key.pem, keep the old one as retired-<date>.pem, \
                 and restart again)",
                self.dir.display()
            );
        }
        let auth = &config.services.auth;
        Ok(TokenIssuer::rotate(
            &self.signing_key(),
            &self.retired_keys(),
            auth.signing_algorithm,
            &auth.issuer,
            &auth.audience,
        )?)
    }

    /// The TokenManager's vault key: `TokenVaultKeyFile` when set, else
    /// `token-vault.key` here.
    pub fn vault_key(&self, config: &DiracConfig) -> anyhow::Result<PathBuf> {
        if let Some(path) = &config.services.auth.token_vault_key_file {
            dirac_tokens::Sealer::from_file(path)?;
            return Ok(path.clone());
        }
        self.prepare()?;
        let path = self.dir.join("token-vault.key");
        if self.create {
            dirac_tokens::Sealer::load_or_create(&path)?;
        } else {
            dirac_tokens::Sealer::from_file(&path).with_context(|| self.origin())?;
        }
        Ok(path)
    }

    /// The pepper of the pilots' one-time secrets (shared by every replica
    /// of the AuthServer and the SiteDirector).
    pub fn pepper(&self) -> anyhow::Result<String> {
        self.prepare()?;
        let path = self.dir.join("pilot-pepper");
        if self.create && !path.exists() {
            crate::embedded::write_private(
                &path,
                &format!(
                    "{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                ),
            )?;
        }
        let pepper = std::fs::read_to_string(&path)
            .with_context(|| format!("read {}", path.display()))
            .with_context(|| self.origin())?
            .trim()
            .to_string();
        if pepper.len() < 32 {
            bail!(
                "{}: the pilot pepper must have at least 32 characters",
                path.display()
            );
        }
        Ok(pepper)
    }

    fn origin(&self) -> String {
        if self.create {
            format!("keys of the data directory {}", self.dir.display())
        } else {
            format!(
                "keys of Services.Auth.KeysDir {} (a mounted Secret: they are never made here)",
                self.dir.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys_dir: Option<&Path>) -> DiracConfig {
        let mut c = DiracConfig::default();
        c.services.auth.keys_dir = keys_dir.map(Path::to_path_buf);
        c
    }

    #[test]
    fn the_data_directory_makes_its_keys_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = config(None);
        let keys = Keys::new(dir.path(), &c);
        let kid = keys.issuer(&c).expect("issuer").kid().to_string();
        let pepper = keys.pepper().expect("pepper");
        keys.vault_key(&c).expect("vault");
        assert_eq!(keys.issuer(&c).expect("again").kid(), kid);
        assert_eq!(keys.pepper().expect("again"), pepper);
    }

    #[test]
    fn a_keys_directory_is_read_never_written() {
        let made = tempfile::tempdir().expect("tmp");
        let c = config(None);
        let source = Keys::new(made.path(), &c);
        let kid = source.issuer(&c).expect("issuer").kid().to_string();
        source.pepper().expect("pepper");
        source.vault_key(&c).expect("vault");

        let empty = tempfile::tempdir().expect("tmp");
        let c = config(Some(empty.path()));
        let keys = Keys::new(std::path::Path::new("/nonexistent"), &c);
        let err = keys.issuer(&c).err().expect("missing key").to_string();
        assert!(err.contains("KeysDir"), "{err}");
        assert!(keys.pepper().is_err());
        assert!(keys.vault_key(&c).is_err());
        assert!(keys.rotate(&c).is_err());
        assert_eq!(std::fs::read_dir(empty.path()).expect("ls").count(), 0);

        let c = config(Some(made.path()));
        let keys = Keys::new(std::path::Path::new("/nonexistent"), &c);
        assert_eq!(keys.issuer(&c).expect("issuer").kid(), kid);
        keys.pepper().expect("pepper");
        keys.vault_key(&c).expect("vault");

        // Another *.pem beside the signing key is a retired key: tokens it
        // signed still verify.
        let old = dirac_core::auth::TokenIssuer::load(
            &made.path().join("signing-key.pem"),
            &c.services.auth.issuer,
            &c.services.auth.audience,
        )
        .expect("old key");
        let who = dirac_core::auth::Identity {
            sub: "dteam:alice".into(),
            username: "alice".into(),
            vo: "dteam".into(),
            group: "dteam_user".into(),
            properties: vec![],
            job: None,
        };
        let old_token = old.issue(&who, 60).expect("token");
        std::fs::rename(
            made.path().join("signing-key.pem"),
            made.path().join("retired-1.pem"),
        )
        .expect("retire");
        let fresh = tempfile::tempdir().expect("tmp");
        Keys::new(fresh.path(), &config(None))
            .issuer(&config(None))
            .expect("new key");
        std::fs::copy(
            fresh.path().join("signing-key.pem"),
            made.path().join("signing-key.pem"),
        )
        .expect("copy");
        let ring = keys.issuer(&c).expect("ring");
        assert_ne!(ring.kid(), kid);
        assert!(ring.verifier().verify(&old_token).is_ok());

        std::fs::write(made.path().join("pilot-pepper"), "short\n").expect("write");
        let short = keys.pepper().expect_err("a short pepper is refused");
        assert!(short.to_string().contains("32"), "{short}");
    }
}
