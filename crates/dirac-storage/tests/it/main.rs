//! Every storage plugin against a real server: XRootD (`xrootd`), HTTPS
//! WebDAV (nginx with DAV and a self-made CA), S3 (moto), and a local
//! directory. Files of 0 bytes, 1 byte and 1 GiB go through each with
//! checksums, files are copied between SEs of different protocols, and
//! failures (a missing file, a dead server, a corrupted copy) come back as
//! the right errors.
//!
//! XRootD binds every interface, so the test re-runs itself inside a
//! private network namespace (`unshare -n`) with only loopback, and starts
//! all the servers there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirac_storage::https::HttpsPlugin;
use dirac_storage::s3::S3Plugin;
use dirac_storage::se::{StorageElement, replicate};
use dirac_storage::xroot::XrootPlugin;
use dirac_storage::{Stat, StorageError, StoragePlugin, checksum, file::FilePlugin};

const NETNS_MARK: &str = "DIRAC_STORAGE_IN_NETNS";
const TEST: &str = "real_servers_round_trip_and_copy_across_protocols";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tools() -> PathBuf {
    std::env::var_os("DIRAC_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dirac-test-tools")
        })
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn real_servers_round_trip_and_copy_across_protocols() {
    if std::env::var_os(NETNS_MARK).is_none() {
        let moto = tools().join("venv/bin/moto_server");
        let missing: Vec<&str> = [
            ("unshare", have("unshare")),
            ("xrootd", have("xrootd") && have("xrdcp")),
            ("nginx", have("nginx")),
            ("moto_server", moto.exists()),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but {missing:?} missing: run `make test-tools` (scripts/storage-servers.sh)"
            );
            eprintln!(
                "skipping: {missing:?} not installed (scripts/storage-servers.sh, make test-tools)"
            );
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        // Its own network (XRootD binds every interface) and mounts (a
        // small tmpfs plays a full disk).
        let out = Command::new("unshare")
            .args(["-n", "-m", "--propagation", "private"])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(NETNS_MARK, "1")
            .output()
            .expect("unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(out.status.success(), "inside the network namespace: {text}");
        assert!(
            text.contains("1 passed"),
            "the inner test did not run: {text}"
        );
        return;
    }
    inside_the_namespace();
}

/// A started server (its pid), stopped when dropped.
struct Server(Option<u32>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

fn script(name: &str, dir: &Path, port: u16) -> Server {
    let out = Command::new("bash")
        .arg(repo().join("tests/storage").join(name))
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect(name);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = stdout.lines().last().and_then(|l| l.trim().parse().ok());
    Server(pid)
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `size` bytes that do not repeat in 1 MiB blocks.
fn make_file(path: &Path, size: u64) {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

fn inside_the_namespace() {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(up.success(), "cannot bring loopback up");
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    let xrootd = script("xrootd.sh", &root.join("xrootd"), 1094);
    let _webdav = script("webdav.sh", &root.join("webdav"), 8443);
    let moto = Server(
        Command::new(tools().join("venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", "9000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|c| c.id()),
    );
    wait_port(9000);
    wait_port(8443);
    // An S3 bucket (moto takes unsigned requests for that).
    let made = Command::new("curl")
        .args(["-sf", "-X", "PUT", "http://127.0.0.1:9000/dirac"])
        .status()
        .expect("curl");
    assert!(made.success(), "cannot create the bucket");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ses: Vec<(&str, Arc<dyn StoragePlugin>)> = vec![
        ("file", Arc::new(FilePlugin::new(root.join("local")))),
        (
            "root",
            Arc::new(XrootPlugin::new("127.0.0.1", Some(1094), "/data")),
        ),
        (
            "https",
            Arc::new(
                HttpsPlugin::new(
                    "127.0.0.1",
                    Some(8443),
                    "/se",
                    Some(&root.join("webdav/ca.pem")),
                )
                .expect("https plugin"),
            ),
        ),
        (
            "s3",
            Arc::new(
                S3Plugin::new(
                    Some("http://127.0.0.1:9000"),
                    None,
                    "dirac/grid",
                    "testing",
                    "testing",
                )
                .expect("s3 plugin"),
            ),
        ),
    ];
    let big_mib: u64 = std::env::var("DIRAC_STORAGE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let files = root.join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let mut samples = Vec::new();
    for (name, size) in [("empty", 0u64), ("one", 1), ("big", big_mib << 20)] {
        let p = files.join(name);
        make_file(&p, size);
        let sum = rt.block_on(checksum::of_file(&p)).expect("sum");
        samples.push((name, p, sum));
    }
    rt.block_on(async {
        // A WebDAV area that demands a bearer token: the plugin with the
        // token file gets in, the one without is refused.
        let token_file = root.join("webdav/bearer-token");
        let ca = root.join("webdav/ca.pem");
        let with = HttpsPlugin::with_token(
            "127.0.0.1",
            Some(8443),
            "/token",
            Some(&ca),
            Some(&token_file),
        )
        .expect("plugin");
        let without =
            HttpsPlugin::new("127.0.0.1", Some(8443), "/token", Some(&ca)).expect("plugin");
        let (_, one, _) = &samples[1];
        with.put("/dteam/tok/one", one)
            .await
            .expect("put with the token");
        assert!(with.stat("/dteam/tok/one").await.expect("stat").is_some());
        assert!(
            matches!(
                without.put("/dteam/tok/two", one).await,
                Err(StorageError::PermissionDenied(_))
            ),
            "no token, no write"
        );
        std::fs::write(&token_file, "# rotated\nnot-the-token\n").expect("rotate");
        assert!(
            matches!(
                with.stat("/dteam/tok/one").await,
                Err(StorageError::PermissionDenied(_))
            ),
            "the file is read again for each request"
        );
        for (proto, plugin) in &ses {
            for (name, path, (size, sum)) in &samples {
                let lfn = format!("/dteam/rt/{name}");
                let t = Instant::now();
                let put = plugin
                    .put(&lfn, path)
                    .await
                    .unwrap_or_else(|e| panic!("{proto} put {name}: {e}"));
                assert_eq!(
                    put,
                    Stat {
                        size: *size,
                        adler32: Some(sum.clone())
                    },
                    "{proto} put {name}"
                );
                let stat = plugin
                    .stat(&lfn)
                    .await
                    .unwrap_or_else(|e| panic!("{proto} stat {name}: {e}"));
                assert_eq!(
                    stat.as_ref().map(|s| s.size),
                    Some(*size),
                    "{proto} stat {name}"
                );
                if let Some(server_sum) = stat.and_then(|s| s.adler32) {
                    assert!(
                        checksum::same(&server_sum, sum),
                        "{proto}: the server's checksum of {name}"
                    );
                }
                let back = files.join(format!("{name}.{proto}"));
                let got = plugin
                    .get(&lfn, &back)
                    .await
                    .unwrap_or_else(|e| panic!("{proto} get {name}: {e}"));
                assert_eq!(
                    got,
                    Stat {
                        size: *size,
                        adler32: Some(sum.clone())
                    },
                    "{proto} get {name}"
                );
                std::fs::remove_file(&back).expect("rm");
                eprintln!(
                    "{proto}: {name} ({size} bytes) round trip in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            // A missing file is NotFound to get, absent to stat, gone to remove.
            let lfn = "/dteam/rt/never";
            assert!(
                matches!(
                    plugin.get(lfn, &files.join("x")).await,
                    Err(StorageError::NotFound(_))
                ),
                "{proto}"
            );
            assert_eq!(plugin.stat(lfn).await.expect("stat"), None, "{proto}");
            plugin
                .remove(lfn)
                .await
                .unwrap_or_else(|e| panic!("{proto} remove missing: {e}"));
            plugin.remove("/dteam/rt/one").await.expect("remove");
            assert_eq!(
                plugin.stat("/dteam/rt/one").await.expect("stat"),
                None,
                "{proto}: removed"
            );
        }
        // Copies across protocols, each checked against the source's checksum.
        let se = |i: usize| StorageElement::with_plugin(ses[i].0, ses[i].1.clone());
        let mid = files.join("mid");
        make_file(&mid, 3 << 20);
        let (_, mid_sum) = checksum::of_file(&mid).await.expect("sum");
        se(0)
            .put("/dteam/copy/mid", &mid, Some(&mid_sum))
            .await
            .expect("put");
        let chain = [(0, 3), (3, 2), (2, 1), (1, 0)];
        for (from, to) in chain {
            let lfn = "/dteam/copy/mid";
            let (stat, tpc) = replicate(&se(from), &se(to), lfn, Some(&mid_sum), &files)
                .await
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", ses[from].0, ses[to].0));
            assert_eq!(stat.size, 3 << 20, "{} -> {}", ses[from].0, ses[to].0);
            eprintln!(
                "copied {} -> {} (third-party: {tpc})",
                ses[from].0, ses[to].0
            );
        }
        // XRootD to XRootD is third-party.
        let xrd = se(1);
        let other = StorageElement::with_plugin(
            "root2",
            Arc::new(XrootPlugin::new("127.0.0.1", Some(1094), "/data/other")),
        );
        let (_, tpc) = replicate(&xrd, &other, "/dteam/copy/mid", Some(&mid_sum), &files)
            .await
            .expect("tpc");
        assert!(tpc, "root to root goes storage to storage");
        // A wrong expected checksum leaves nothing at the destination.
        let bad = replicate(&se(0), &se(3), "/dteam/copy/mid2", Some("00000002"), &files).await;
        assert!(bad.is_err());
        se(0)
            .put("/dteam/copy/mid2", &mid, None)
            .await
            .expect("put");
        let bad = replicate(&se(0), &se(3), "/dteam/copy/mid2", Some("00000002"), &files).await;
        assert!(matches!(bad, Err(StorageError::Checksum { .. })), "{bad:?}");
        assert_eq!(
            se(3).stat("/dteam/copy/mid2").await.expect("stat"),
            None,
            "nothing left on s3"
        );
        // Occupancy where the protocol tells it.
        let occ = ses[1].1.occupancy().await.expect("spaceinfo");
        eprintln!("xrootd occupancy: {occ:?}");
        assert!(
            occ.is_some_and(|o| o.total >= o.free && o.total > 0),
            "{occ:?}"
        );
        // S3 cannot tell: the JSON document on the storage says it.
        let s3 = se(3);
        assert!(matches!(
            s3.occupancy_for("dteam", &files).await,
            Err(StorageError::NotFound(_))
        ));
        let doc = files.join("occupancy.json");
        std::fs::write(&doc, r#"{"Total": 1000, "Free": 250}"#).expect("write");
        s3.put("/dteam/occupancy.json", &doc, None)
            .await
            .expect("put");
        let occ = s3.occupancy_for("dteam", &files).await.expect("occupancy");
        assert_eq!((occ.total, occ.free), (1000, 250));
    });
    // A dead server is Unavailable, not a hang or a panic.
    drop(moto);
    std::thread::sleep(Duration::from_millis(300));
    let down = rt.block_on(ses[3].1.stat("/dteam/rt/big"));
    assert!(
        matches!(down, Err(StorageError::Unavailable(_))),
        "{down:?}"
    );

    // A full disk: the upload fails as NoSpace and leaves no part file.
    let full = root.join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(mounted.success(), "cannot mount a tmpfs");
    let small = FilePlugin::new(&full);
    let two_mib = files.join("two");
    make_file(&two_mib, 2 << 20);
    let r = rt.block_on(small.put("/dteam/full/f", &two_mib));
    assert!(matches!(r, Err(StorageError::NoSpace(_))), "{r:?}");
    let left: Vec<_> = std::fs::read_dir(full.join("dteam/full"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind on a full disk: {left:?}");
    let _ = Command::new("umount").arg(&full).status();

    // The XRootD server dies in the middle of an upload: Unavailable, and
    // the call returns instead of hanging.
    if big_mib < 512 {
        eprintln!(
            "skipping the interrupted upload: DIRAC_STORAGE_BIG_MIB={big_mib} is too small to interrupt"
        );
        return;
    }
    let big = &samples[2].1;
    let plugin = ses[1].1.clone();
    let lfn = "/dteam/rt/interrupted";
    let killed = rt.block_on(async {
        let upload = tokio::spawn({
            let big = big.clone();
            async move { plugin.put(lfn, &big).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(pid) = xrootd.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        drop(xrootd);
        tokio::time::timeout(Duration::from_secs(120), upload).await
    });
    let result = killed.expect("the upload returned").expect("task");
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{result:?}"
    );
}
