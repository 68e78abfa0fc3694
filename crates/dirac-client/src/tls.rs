//! Trusting an installation's own CA over HTTPS (the AuthServer's endpoints
//! behind envoy, with a private CA).

use std::path::Path;

/// The certificates of the PEM bundle at `ca`, as the only roots to trust.
pub fn ca_roots(ca: &Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
    let mut certs: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            // A damaged bundle is refused whole, not trusted in part.
            Err(e) => return Err(format!("CA file {}: {e}", ca.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("CA file {} holds no certificate", ca.display()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let refused = |path: &Path| match ca_roots(path) {
            Ok(_) => panic!("{} accepted", path.display()),
            Err(e) => e,
        };
        let err = refused(&path);
        assert!(
            err.contains("ca.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = refused(&dir.path().join("missing.pem"));
        assert!(err.contains("missing.pem"), "{err}");
    }
}
