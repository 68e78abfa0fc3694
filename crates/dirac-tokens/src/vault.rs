//! IdP refresh tokens at rest: sealed with XChaCha20-Poly1305 under a key
//! kept outside the database (a file, in Kubernetes a mounted Secret), bound
//! to the (identity provider, user) they belong to, so a row copied to
//! another user does not open.

use std::future::Future;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::TokenError;

/// Prefix of a sealed value: the format, for a later change of cipher.
const FORMAT: &str = "xc1.";
const NONCE_LEN: usize = 24;

/// Where sealed refresh tokens are kept: one per (IdP, user), the last
/// one saved winning.
pub trait Vault: Send + Sync {
    fn load(
        &self,
        idp: &str,
        user: &str,
    ) -> impl Future<Output = Result<Option<String>, TokenError>> + Send;
    fn save(
        &self,
        idp: &str,
        user: &str,
        sealed: &str,
    ) -> impl Future<Output = Result<(), TokenError>> + Send;
}

/// The vault key. It never reaches `Debug` output.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A key of 32 bytes, base64 (standard or url-safe) in `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Vault(format!("cannot read {}: {e}", path.display())))?;
        Self::from_base64(text.trim())
            .map_err(|e| TokenError::Vault(format!("{}: {e}", path.display())))
    }

    /// The key at `path`, made (mode 0600) when there is none: the embedded
    /// installation's default.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        if !path.exists() {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let key = STANDARD.encode(rand::random::<[u8; 32]>());
            options
                .open(path)
                .and_then(|mut f| writeln!(f, "{key}"))
                .map_err(|e| TokenError::Vault(format!("cannot write {}: {e}", path.display())))?;
        }
        Self::from_file(path)
    }

    fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| "the vault key is not base64".to_string())?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("the vault key has {} bytes, not 32", bytes.len()))?;
        Ok(Sealer { cipher })
    }

    /// Seal `secret` for (`idp`, `user`).
    pub fn seal(&self, idp: &str, user: &str, secret: &str) -> Result<String, TokenError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = binding(idp, user);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| TokenError::Vault("cannot seal the token".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{FORMAT}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Open what [`seal`](Self::seal) made for the same (`idp`, `user`).
    pub fn open(&self, idp: &str, user: &str, sealed: &str) -> Result<String, TokenError> {
        let refused = || {
            TokenError::Vault(format!(
                "the stored token of {user} does not open with this vault key"
            ))
        };
        let bytes = sealed
            .strip_prefix(FORMAT)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(refused)?;
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| refused())?;
        let aad = binding(idp, user);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| refused())?;
        String::from_utf8(plain).map_err(|_| refused())
    }
}

fn binding(idp: &str, user: &str) -> Vec<u8> {
    format!("dirac-tokens\0{idp}\0{user}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_for_their_owner_and_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("vault.key");
        let sealer = Sealer::load_or_create(&path).expect("key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = sealer
            .seal("https://iam", "bob", "rt-secret")
            .expect("seal");
        assert!(!sealed.contains("rt-secret"));
        assert_ne!(
            sealed,
            sealer
                .seal("https://iam", "bob", "rt-secret")
                .expect("seal")
        );
        let again = Sealer::load_or_create(&path).expect("same key");
        assert_eq!(
            again.open("https://iam", "bob", &sealed).expect("open"),
            "rt-secret"
        );
        // Another user, another IdP, another key, a flipped bit: refused.
        assert!(sealer.open("https://iam", "eve", &sealed).is_err());
        assert!(sealer.open("https://other", "bob", &sealed).is_err());
        let other = Sealer::load_or_create(&dir.path().join("other.key")).expect("key");
        assert!(other.open("https://iam", "bob", &sealed).is_err());
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(sealer.open("https://iam", "bob", &flipped).is_err());
        assert!(sealer.open("https://iam", "bob", "garbage").is_err());
        assert!(!format!("{sealer:?}").contains(&std::fs::read_to_string(&path).expect("key")));
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("short.key");
        std::fs::write(&path, STANDARD.encode([1u8; 16])).expect("write");
        let err = Sealer::from_file(&path).expect_err("16 bytes");
        assert!(
            err.to_string().contains("short.key") && err.to_string().contains("16 bytes"),
            "{err}"
        );
        let err = Sealer::from_file(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
