//! The data commands (COMDIRAC's `dls`, `dput`, `dget` …) over the
//! catalog and the DataManager. Relative paths are taken from the
//! session's catalog directory (`dcd`), kept next to the client config;
//! it starts at the home `/<vo>/user/<initial>/<user>`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail};
use dirac_client::data::{DataError, DataManager, token_claims};
use dirac_client::{Client, ClientConfig, Env};
use dirac_proto::dms::{
    self as pb, ChangeModeRequest, DatasetRef, DatasetsRequest, Empty, FindRequest,
    GetFilesRequest, ListRequest, MetaValue, MetadataField, Paths, RemoveMetadataRequest, SeRef,
    SetMetadataRequest,
};
use serde_json::{Value, json};

use super::{Progress, human_bytes, rpc_error};
use crate::cli::{Command, DatasetCommand, MetaCommand};
use crate::report::Report;

/// The session: where relative paths start.
pub struct Session {
    cwd: String,
    home: String,
    file: Option<std::path::PathBuf>,
}

impl Session {
    pub fn load(config: &ClientConfig, env: &dyn Env) -> Self {
        let claims = config.token.as_deref().and_then(token_claims);
        let home = claims
            .as_ref()
            .and_then(|c| {
                let vo = c["vo"].as_str()?;
                let user = c["preferred_username"].as_str()?;
                let initial = user.chars().next()?;
                Some(format!("/{vo}/user/{initial}/{user}"))
            })
            .unwrap_or_else(|| "/".into());
        let file = dirac_client::default_config_path(env).map(|p| p.with_file_name("dcwd"));
        let cwd = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| s.starts_with('/'))
            .unwrap_or_else(|| home.clone());
        Session { cwd, home, file }
    }

    /// `path` made absolute: `~` is the home, `..` and `.` are resolved
    /// here (the server refuses them).
    pub fn resolve(&self, path: &str) -> String {
        let start = if let Some(rest) = path.strip_prefix('~') {
            format!("{}{rest}", self.home)
        } else if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.cwd)
        };
        let mut parts: Vec<&str> = Vec::new();
        for p in start.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }

    fn save(&self, cwd: &str) -> anyhow::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| anyhow!("no place to keep the session directory (set HOME)"))?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, format!("{cwd}\n"))?;
        Ok(())
    }
}

fn mode_string(mode: u32, dir: bool) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn date(t: i64) -> String {
    chrono_like(t)
}

/// `YYYY-MM-DD HH:MM` (UTC) without a date crate.
fn chrono_like(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn file_json(f: &pb::FileInfo) -> Value {
    json!({
        "lfn": f.lfn, "size": f.size, "checksum": f.checksum, "checksum_type": f.checksum_type,
        "guid": f.guid, "owner": f.owner, "group": f.group, "mode": format!("{:o}", f.mode),
        "status": f.status, "creation_time": f.creation_time, "modification_time": f.modification_time,
        "replicas": f.replicas.iter().map(|r| json!({"se": r.se, "pfn": r.pfn, "status": r.status})).collect::<Vec<_>>(),
    })
}

fn meta_text(v: &MetaValue) -> String {
    use pb::meta_value::Value as V;
    match &v.value {
        Some(V::Int(i)) => i.to_string(),
        Some(V::Float(f)) => f.to_string(),
        Some(V::String(s)) | Some(V::Date(s)) => s.clone(),
        None => String::new(),
    }
}

/// Per-item failures into the report (stderr, exit 1).
fn report_failures(report: &mut Report, failed: &BTreeMap<String, String>) {
    for (k, m) in failed {
        report.eprintln(format!("{k}: {m}"));
    }
    if !failed.is_empty() {
        report.failed = true;
    }
}

/// The end of a per-file command: the JSON document (what was done, what
/// failed) or the failures on stderr.
fn per_file(
    mut report: Report,
    as_json: bool,
    key: &str,
    done: Vec<Value>,
    failed: &BTreeMap<String, String>,
) -> Report {
    if as_json {
        report.println(json!({key: done, "failed": failed}).to_string());
    }
    report_failures(&mut report, failed);
    report
}

fn item_map(
    failed: &std::collections::HashMap<String, dirac_proto::common::ItemError>,
) -> BTreeMap<String, String> {
    failed
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                format!("{}: {}", super::code_words(&e.code), e.message),
            )
        })
        .collect()
}

fn data_error(e: &DataError) -> String {
    e.to_string()
}

/// A transfer progress bar on a terminal, nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(progress: Progress, name: &str, size: u64) -> Self {
        if !progress.enabled() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        Bar(Some(bar))
    }

    fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

async fn default_se(
    client: &Client,
    given: Option<String>,
    env: &dyn Env,
) -> anyhow::Result<String> {
    if let Some(se) = given.or_else(|| env.var("DIRAC_SE").filter(|s| !s.is_empty())) {
        return Ok(se);
    }
    let list = client
        .storage_element()
        .list_storage_elements(Empty {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .storage_elements;
    match list.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => bail!("the installation has no storage element"),
        many => bail!(
            "choose a storage element with --se: {}",
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn run(
    client: &Client,
    config: &ClientConfig,
    env: &dyn Env,
    command: Command,
    as_json: bool,
) -> anyhow::Result<Report> {
    let session = Session::load(config, env);
    let progress = Progress::new(as_json);
    let dm = DataManager::new(client.clone());
    let catalog = || client.file_catalog();
    match command {
        Command::Dpwd => Ok(if as_json {
            Report::out(json!({"cwd": session.cwd}).to_string())
        } else {
            Report::out(session.cwd.clone())
        }),
        Command::Dcd { path } => {
            let target = session.resolve(path.as_deref().unwrap_or("~"));
            let r = catalog()
                .exists(Paths {
                    paths: vec![target.clone()],
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if let Some(e) = r.failed.get(&target) {
                bail!("{target}: {}", e.message);
            }
            if r.kinds.get(&target).map(String::as_str) != Some("Directory") {
                bail!("{target}: no such directory");
            }
            session.save(&target)?;
            Ok(Report::out(target))
        }
        Command::Dmkdir { paths } => {
            let paths: Vec<String> = paths.iter().map(|p| session.resolve(p)).collect();
            let r = catalog()
                .create_directories(Paths { paths })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            if as_json {
                report.println(
                    json!({"succeeded": r.succeeded, "failed": item_map(&r.failed)}).to_string(),
                );
            }
            report_failures(&mut report, &item_map(&r.failed));
            Ok(report)
        }
        Command::Dls {
            long,
            recursive,
            paths,
        } => {
            let paths = if paths.is_empty() {
                vec![session.cwd.clone()]
            } else {
                paths
            };
            let mut report = Report::default();
            let mut all = Vec::new();
            let mut failed = BTreeMap::new();
            for p in paths {
                let path = session.resolve(&p);
                let kinds = catalog()
                    .exists(Paths {
                        paths: vec![path.clone()],
                    })
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                match kinds.kinds.get(&path).map(String::as_str) {
                    Some("File") => {
                        if let Some(f) = dm
                            .file(&path, false)
                            .await
                            .map_err(|e| anyhow!(data_error(&e)))?
                        {
                            all.push(pb::Entry {
                                kind: Some(pb::entry::Kind::File(f)),
                            });
                        }
                        continue;
                    }
                    Some("Directory") => {}
                    _ => {
                        let why = kinds.failed.get(&path).map_or_else(
                            || "no such file or directory".to_string(),
                            |e| e.message.clone(),
                        );
                        failed.insert(path, why);
                        continue;
                    }
                }
                let mut stream = catalog()
                    .list_directory(ListRequest {
                        path: path.clone(),
                        recursive,
                        with_replicas: long,
                    })
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                while let Some(batch) = stream.message().await.map_err(rpc_error)? {
                    if as_json {
                        all.extend(batch.entries);
                        continue;
                    }
                    for e in &batch.entries {
                        report.println(ls_line(e, long, recursive));
                    }
                }
            }
            if as_json {
                let entries: Vec<Value> = all
                    .iter()
                    .filter_map(|e| match &e.kind {
                        Some(pb::entry::Kind::File(f)) => Some(file_json(f)),
                        Some(pb::entry::Kind::Directory(d)) => Some(json!({
                            "path": d.path, "directory": true, "owner": d.owner, "group": d.group,
                            "mode": format!("{:o}", d.mode), "modification_time": d.modification_time,
                        })),
                        None => None,
                    })
                    .collect();
                report.println(json!({"entries": entries, "failed": failed}).to_string());
            } else {
                for e in &all {
                    report.println(ls_line(e, long, true));
                }
            }
            report_failures(&mut report, &failed);
            Ok(report)
        }
        Command::Dput {
            mut args,
            se,
            overwrite,
        } => {
            let se = default_se(client, se, env).await?;
            let dest = if args.len() > 1 && !Path::new(&args[args.len() - 1]).exists() {
                args.pop()
            } else {
                None
            };
            let to_dir = dest.as_ref().is_none_or(|d| d.ends_with('/')) || args.len() > 1;
            let base = session.resolve(dest.as_deref().unwrap_or("."));
            let mut report = Report::default();
            let mut done = Vec::new();
            let mut failed = BTreeMap::new();
            for local in &args {
                let path = Path::new(local);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let lfn = if to_dir {
                    format!("{}/{name}", base.trim_end_matches('/'))
                } else {
                    base.clone()
                };
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let bar = Bar::new(progress, &name, size);
                let r = dm
                    .put_and_register(path, &lfn, &se, overwrite, &|d, t| bar.update(d, t))
                    .await;
                bar.finish();
                match r {
                    Ok((size, adler32)) => {
                        if !as_json {
                            report.println(format!(
                                "{lfn} ({}, adler32 {adler32}) on {se}",
                                human_bytes(size as usize)
                            ));
                        }
                        done.push(json!({"lfn": lfn, "size": size, "adler32": adler32, "se": se}));
                    }
                    Err(e) => {
                        failed.insert(lfn, data_error(&e));
                    }
                }
            }
            Ok(per_file(report, as_json, "uploaded", done, &failed))
        }
        Command::Dget { lfns, dir } => {
            let mut report = Report::default();
            let mut done = Vec::new();
            let mut failed = BTreeMap::new();
            for l in lfns {
                let lfn = session.resolve(&l);
                let name = lfn.rsplit('/').next().unwrap_or("download").to_string();
                let local = dir.join(&name);
                let bar = Bar::new(progress, &name, 0);
                let r = dm.get_file(&lfn, &local, &|d, t| bar.update(d, t)).await;
                bar.finish();
                match r {
                    Ok(size) => {
                        if !as_json {
                            report.println(format!(
                                "{} ({})",
                                local.display(),
                                human_bytes(size as usize)
                            ));
                        }
                        done.push(
                            json!({"lfn": lfn, "path": local.display().to_string(), "size": size}),
                        );
                    }
                    Err(e) => {
                        failed.insert(lfn, data_error(&e));
                    }
                }
            }
            Ok(per_file(report, as_json, "downloaded", done, &failed))
        }
        Command::Drepl { lfns, dest, source } => {
            let mut report = Report::default();
            let mut failed = BTreeMap::new();
            let mut done = Vec::new();
            for l in lfns {
                let lfn = session.resolve(&l);
                match dm
                    .replicate_and_register(&lfn, &dest, source.as_deref())
                    .await
                {
                    Ok(tpc) => {
                        if !as_json {
                            report.println(format!(
                                "{lfn} → {dest}{}",
                                if tpc { " (third-party)" } else { "" }
                            ));
                        }
                        done.push(json!({"lfn": lfn, "se": dest, "third_party": tpc}));
                    }
                    Err(e) => {
                        failed.insert(lfn, data_error(&e));
                    }
                }
            }
            Ok(per_file(report, as_json, "replicated", done, &failed))
        }
        Command::Drm {
            recursive,
            se,
            paths,
        } => {
            let mut report = Report::default();
            let mut failed = BTreeMap::new();
            let (mut files, mut dirs) = (0u64, 0u64);
            let mut plain = Vec::new();
            for p in paths {
                let path = session.resolve(&p);
                if let Some(se) = &se {
                    match dm.remove_replica(&path, se).await {
                        Ok(()) => files += 1,
                        Err(e) => {
                            failed.insert(path, data_error(&e));
                        }
                    }
                    continue;
                }
                let kinds = catalog()
                    .exists(Paths {
                        paths: vec![path.clone()],
                    })
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                if kinds.kinds.get(&path).map(String::as_str) == Some("Directory") {
                    if !recursive {
                        failed.insert(path, "is a directory (use -r)".into());
                        continue;
                    }
                    let r = dm
                        .remove_tree(&path)
                        .await
                        .map_err(|e| anyhow!(data_error(&e)))?;
                    files += r.files;
                    dirs += r.directories;
                    for (k, e) in r.failed {
                        failed.insert(k, data_error(&e));
                    }
                } else {
                    plain.push(path);
                }
            }
            if !plain.is_empty() {
                let out = dm
                    .remove_files(&plain)
                    .await
                    .map_err(|e| anyhow!(data_error(&e)))?;
                files += (plain.len() - out.len()) as u64;
                for (k, e) in out {
                    failed.insert(k, data_error(&e));
                }
            }
            if as_json {
                report.println(
                    json!({"files": files, "directories": dirs, "failed": failed}).to_string(),
                );
            } else if files + dirs > 0 {
                report.println(format!("removed {files} files, {dirs} directories"));
            }
            report_failures(&mut report, &failed);
            Ok(report)
        }
        Command::Dfind { path, query } => {
            let root = session.resolve(path.as_deref().unwrap_or("."));
            let mut stream = catalog()
                .find_files(FindRequest { path: root, query })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            let mut all = Vec::new();
            while let Some(batch) = stream.message().await.map_err(rpc_error)? {
                if as_json {
                    all.extend(batch.lfns);
                } else {
                    for l in batch.lfns {
                        report.println(l);
                    }
                }
            }
            if as_json {
                report.println(json!({"lfns": all}).to_string());
            }
            Ok(report)
        }
        Command::Dsize { paths } => {
            let paths: Vec<String> = if paths.is_empty() {
                vec![session.cwd.clone()]
            } else {
                paths.iter().map(|p| session.resolve(p)).collect()
            };
            let r = catalog()
                .get_directory_size(Paths { paths })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            let sizes: BTreeMap<_, _> = r.sizes.iter().collect();
            if as_json {
                let v: BTreeMap<&String, Value> = sizes
                    .iter()
                    .map(|(k, s)| {
                        let per_se: BTreeMap<&String, Value> = s.per_se.iter().map(|(se, u)| (se, json!({"size": u.size, "files": u.files}))).collect();
                        (*k, json!({"logical_size": s.logical_size, "logical_files": s.logical_files, "directories": s.directories, "per_se": per_se}))
                    })
                    .collect();
                report.println(json!({"sizes": v, "failed": item_map(&r.failed)}).to_string());
            } else {
                for (path, s) in sizes {
                    report.println(format!(
                        "{path}: {} in {} files, {} directories",
                        human_bytes(s.logical_size as usize),
                        s.logical_files,
                        s.directories
                    ));
                    let per: BTreeMap<_, _> = s.per_se.iter().collect();
                    for (se, u) in per {
                        report.println(format!(
                            "  {se}: {} in {} files",
                            human_bytes(u.size as usize),
                            u.files
                        ));
                    }
                }
            }
            report_failures(&mut report, &item_map(&r.failed));
            Ok(report)
        }
        Command::Dreplicas { lfns } => {
            let lfns: Vec<String> = lfns.iter().map(|l| session.resolve(l)).collect();
            let r = catalog()
                .get_files(GetFilesRequest {
                    lfns,
                    all_status: false,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            let files: BTreeMap<_, _> = r.files.iter().collect();
            if as_json {
                let v: BTreeMap<&String, Value> = files
                    .iter()
                    .map(|(k, f)| (*k, file_json(f)["replicas"].clone()))
                    .collect();
                report.println(json!({"replicas": v, "failed": item_map(&r.failed)}).to_string());
            } else {
                for (lfn, f) in files {
                    report.println(format!("{lfn}:"));
                    for rep in &f.replicas {
                        report.println(format!(
                            "  {}{}",
                            rep.se,
                            if rep.pfn.is_empty() {
                                String::new()
                            } else {
                                format!(" {}", rep.pfn)
                            }
                        ));
                    }
                }
            }
            report_failures(&mut report, &item_map(&r.failed));
            Ok(report)
        }
        Command::Dchmod {
            mode,
            paths,
            recursive,
        } => {
            let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                .map_err(|_| anyhow!("'{mode}' is not an octal mode"))?;
            let paths: Vec<String> = paths.iter().map(|p| session.resolve(p)).collect();
            let r = catalog()
                .change_mode(ChangeModeRequest {
                    paths,
                    mode,
                    recursive,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            report_failures(&mut report, &item_map(&r.failed));
            Ok(report)
        }
        Command::Dmeta(cmd) => meta(client, &session, cmd, as_json).await,
        Command::Ddataset(cmd) => dataset(client, &session, cmd, as_json).await,
        Command::Dse => {
            let list = client
                .storage_element()
                .list_storage_elements(Empty {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = Report::default();
            let mut rows = Vec::new();
            for se in list.storage_elements {
                let occ = client
                    .storage_element()
                    .get_occupancy(SeRef {
                        se: se.name.clone(),
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner());
                if !as_json {
                    report.println(format!(
                        "{} site={} protocols={} read={} write={}{}",
                        se.name,
                        if se.site.is_empty() { "-" } else { &se.site },
                        se.protocols.join(","),
                        se.read_access,
                        se.write_access,
                        occ.map(|o| format!(
                            " free={} of {}",
                            human_bytes(o.free as usize),
                            human_bytes(o.total as usize)
                        ))
                        .unwrap_or_default()
                    ));
                }
                rows.push(json!({"name": se.name, "site": se.site, "protocols": se.protocols, "read_access": se.read_access, "write_access": se.write_access, "total": occ.map(|o| o.total), "free": occ.map(|o| o.free)}));
            }
            if as_json {
                report.println(json!({"storage_elements": rows}).to_string());
            }
            Ok(report)
        }
        other => bail!("not a data command: {other:?}"),
    }
}

fn ls_line(e: &pb::Entry, long: bool, full: bool) -> String {
    let name = |p: &str| {
        if full {
            p.to_string()
        } else {
            p.rsplit('/').next().unwrap_or(p).to_string()
        }
    };
    match &e.kind {
        Some(pb::entry::Kind::Directory(d)) if long => format!(
            "{} {:<8} {:<12} {:>10} {} {}/",
            mode_string(d.mode, true),
            d.owner,
            d.group,
            "-",
            date(d.modification_time),
            name(&d.path)
        ),
        Some(pb::entry::Kind::Directory(d)) => format!("{}/", name(&d.path)),
        Some(pb::entry::Kind::File(f)) if long => format!(
            "{} {:<8} {:<12} {:>10} {} {} [{}]",
            mode_string(f.mode, false),
            f.owner,
            f.group,
            f.size,
            date(f.modification_time),
            name(&f.lfn),
            f.replicas
                .iter()
                .map(|r| r.se.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(pb::entry::Kind::File(f)) => name(&f.lfn),
        None => String::new(),
    }
}

async fn meta(
    client: &Client,
    session: &Session,
    cmd: MetaCommand,
    as_json: bool,
) -> anyhow::Result<Report> {
    let mut catalog = client.file_catalog();
    let mut report = Report::default();
    match cmd {
        MetaCommand::Set { path, values } => {
            let mut map = std::collections::HashMap::new();
            for v in values {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("'{v}' is not NAME=VALUE"))?;
                map.insert(
                    k.to_string(),
                    MetaValue {
                        value: Some(pb::meta_value::Value::String(val.to_string())),
                    },
                );
            }
            catalog
                .set_metadata(SetMetadataRequest {
                    path: session.resolve(&path),
                    values: map,
                })
                .await
                .map_err(rpc_error)?;
        }
        MetaCommand::Rm { path, names } => {
            catalog
                .remove_metadata(RemoveMetadataRequest {
                    path: session.resolve(&path),
                    names,
                })
                .await
                .map_err(rpc_error)?;
        }
        MetaCommand::Get { paths } => {
            let paths: Vec<String> = paths.iter().map(|p| session.resolve(p)).collect();
            let r = catalog
                .get_metadata(Paths { paths })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let found: BTreeMap<_, _> = r.metadata.iter().collect();
            if as_json {
                let v: BTreeMap<&String, Value> = found
                    .iter()
                    .map(|(p, m)| {
                        let values: BTreeMap<&String, String> =
                            m.values.iter().map(|(k, v)| (k, meta_text(v))).collect();
                        (
                            *p,
                            json!({"values": values, "inherited_from": m.inherited_from}),
                        )
                    })
                    .collect();
                report.println(json!({"metadata": v, "failed": item_map(&r.failed)}).to_string());
            } else {
                for (p, m) in found {
                    report.println(format!("{p}:"));
                    let values: BTreeMap<_, _> = m.values.iter().collect();
                    for (k, v) in values {
                        let from = m
                            .inherited_from
                            .get(k)
                            .map(|f| format!(" (from {f})"))
                            .unwrap_or_default();
                        report.println(format!("  {k} = {}{from}", meta_text(v)));
                    }
                }
            }
            report_failures(&mut report, &item_map(&r.failed));
        }
        MetaCommand::Ls => {
            let r = catalog
                .get_metadata_fields(Empty {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            if as_json {
                let v: Vec<Value> = r
                    .fields
                    .iter()
                    .map(|f| json!({"name": f.name, "type": f.r#type, "scope": f.scope}))
                    .collect();
                report.println(json!({"fields": v}).to_string());
            } else {
                for f in r.fields {
                    report.println(format!("{} {} ({})", f.name, f.r#type, f.scope));
                }
            }
        }
        MetaCommand::AddField { name, kind, file } => {
            catalog
                .add_metadata_field(MetadataField {
                    name,
                    r#type: kind,
                    scope: if file { "file" } else { "directory" }.into(),
                })
                .await
                .map_err(rpc_error)?;
        }
    }
    Ok(report)
}

fn dataset_line(d: &pb::Dataset) -> String {
    format!(
        "{} {} {} files {} query: {} (under {})",
        d.name,
        d.status,
        d.files,
        human_bytes(d.size as usize),
        d.query,
        d.path
    )
}

fn dataset_json(d: &pb::Dataset) -> Value {
    json!({"name": d.name, "path": d.path, "query": d.query, "status": d.status, "owner": d.owner, "group": d.group, "files": d.files, "size": d.size})
}

async fn dataset(
    client: &Client,
    session: &Session,
    cmd: DatasetCommand,
    as_json: bool,
) -> anyhow::Result<Report> {
    let mut catalog = client.file_catalog();
    let one = |d: pb::Dataset| {
        if as_json {
            Report::out(dataset_json(&d).to_string())
        } else {
            Report::out(dataset_line(&d))
        }
    };
    match cmd {
        DatasetCommand::Add { name, path, query } => {
            let d = catalog
                .add_dataset(pb::Dataset {
                    name: session.resolve(&name),
                    path: session.resolve(path.as_deref().unwrap_or(".")),
                    query,
                    ..Default::default()
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(one(d))
        }
        DatasetCommand::Freeze { name } => Ok(one(catalog
            .freeze_dataset(DatasetRef {
                name: session.resolve(&name),
            })
            .await
            .map_err(rpc_error)?
            .into_inner())),
        DatasetCommand::Release { name } => Ok(one(catalog
            .release_dataset(DatasetRef {
                name: session.resolve(&name),
            })
            .await
            .map_err(rpc_error)?
            .into_inner())),
        DatasetCommand::Rm { name } => {
            catalog
                .remove_dataset(DatasetRef {
                    name: session.resolve(&name),
                })
                .await
                .map_err(rpc_error)?;
            Ok(Report::default())
        }
        DatasetCommand::Ls { path } => {
            let path = path.map(|p| session.resolve(&p)).unwrap_or_default();
            let r = catalog
                .get_datasets(DatasetsRequest { path })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if as_json {
                return Ok(Report::out(
                    json!({"datasets": r.datasets.iter().map(dataset_json).collect::<Vec<_>>()})
                        .to_string(),
                ));
            }
            let mut report = Report::default();
            for d in &r.datasets {
                report.println(dataset_line(d));
            }
            Ok(report)
        }
        DatasetCommand::Files { name } => {
            let mut stream = catalog
                .get_dataset_files(DatasetRef {
                    name: session.resolve(&name),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut all = Vec::new();
            while let Some(b) = stream.message().await.map_err(rpc_error)? {
                all.extend(b.lfns);
            }
            Ok(if as_json {
                Report::out(json!({"lfns": all}).to_string())
            } else {
                Report::out(all.join("\n"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            cwd: "/dteam/user/a/alice/data".into(),
            home: "/dteam/user/a/alice".into(),
            file: None,
        }
    }

    #[test]
    fn paths_resolve_against_the_session() {
        let s = session();
        assert_eq!(s.resolve("f"), "/dteam/user/a/alice/data/f");
        assert_eq!(s.resolve("../x/./y"), "/dteam/user/a/alice/x/y");
        assert_eq!(s.resolve("~/z"), "/dteam/user/a/alice/z");
        assert_eq!(s.resolve("/dteam/other"), "/dteam/other");
        assert_eq!(s.resolve("."), "/dteam/user/a/alice/data");
        assert_eq!(mode_string(0o754, true), "drwxr-xr--");
        assert_eq!(chrono_like(1_704_067_200), "2024-01-01 00:00");
    }
}
