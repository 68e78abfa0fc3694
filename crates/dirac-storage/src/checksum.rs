//! Adler32, the checksum DIRAC keeps for every file (8 lowercase hex
//! digits), computed while data streams through.

use std::path::Path;

use tokio::io::AsyncReadExt as _;

/// A running Adler32.
#[derive(Default, Clone)]
pub struct Adler32(adler2::Adler32);

impl Adler32 {
    pub fn new() -> Self {
        Adler32(adler2::Adler32::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.write_slice(data);
    }

    /// 8 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:08x}", self.0.checksum())
    }
}

/// Size and Adler32 of a local file.
pub async fn of_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut sum = Adler32::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, sum.hex()))
}

/// Checksums as people write them: case and leading zeros do not matter.
pub fn same(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches('0').to_ascii_lowercase();
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let mut a = Adler32::new();
        assert_eq!(a.hex(), "00000001");
        a.update(b"Wikipedia");
        assert_eq!(a.hex(), "11e60398");
        assert!(same("0011E60398", "11e60398"));
        assert!(!same("11e60399", "11e60398"));
    }
}
