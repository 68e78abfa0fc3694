//! The catalog on every reachable database backend: namespace, files,
//! replicas, permissions, usage counters, metadata queries, datasets,
//! ancestry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dirac_core::config::DiracConfig;
use dirac_core::testing::{ALL_BACKENDS, TestDb};
use dirac_dms::DmsError;
use dirac_dms::catalog::meta::{Field, MetaType, Scope};
use dirac_dms::catalog::{Catalog, Cursor, Entry, NewFile, Outcome};
use dirac_dms::perms::Caller;

const CONFIG: &str = r"
Registry:
  VOs:
    dteam:
      DefaultGroup: dteam_user
      Users: { alice: {}, bob: {}, carol: {}, admin: {} }
      Groups:
        dteam_user: { Properties: [NormalUser], Users: [alice, bob, admin] }
        dteam_prod: { Properties: [NormalUser, ProductionManagement], Users: [carol, alice] }
        dteam_admin: { Properties: [NormalUser, FileCatalogManagement], Users: [admin] }
    atlas:
      DefaultGroup: atlas_user
      Users: { mallory: {} }
      Groups:
        atlas_user: { Properties: [NormalUser], Users: [mallory] }
Resources:
  StorageElements:
    SE-A: { Protocols: [{ Protocol: file }] }
    SE-B: { Protocols: [{ Protocol: file }] }
";

fn caller(user: &str, group: &str) -> Caller {
    Caller {
        username: user.into(),
        group: group.into(),
        vo: if user == "mallory" { "atlas" } else { "dteam" }.into(),
        admin: group == "dteam_admin",
    }
}

fn alice() -> Caller {
    caller("alice", "dteam_user")
}

fn admin() -> Caller {
    caller("admin", "dteam_admin")
}

fn file(lfn: &str, size: u64, se: &str) -> NewFile {
    NewFile {
        lfn: lfn.into(),
        size,
        checksum: format!("{:x}", size + 1),
        replicas: vec![(se.into(), String::new())],
        ..Default::default()
    }
}

fn ok(out: &Outcome) {
    for (k, r) in out {
        assert!(r.is_ok(), "{k}: {r:?}");
    }
}

fn err<'a>(out: &'a Outcome, key: &str) -> &'a DmsError {
    match out.get(key) {
        Some(Err(e)) => e,
        other => panic!("{key}: expected a failure, got {other:?}"),
    }
}

async fn each_backend(test: impl AsyncFn(Catalog)) {
    let config =
        Arc::new(DiracConfig::from_yaml(CONFIG, "test", &BTreeMap::new()).expect("config"));
    for backend in ALL_BACKENDS {
        let Some(db) = TestDb::new(backend).await else {
            continue;
        };
        let catalog = Catalog::open(db.db.clone(), config.clone())
            .await
            .expect("open");
        // Opening again applies nothing twice.
        Catalog::open(db.db.clone(), config.clone())
            .await
            .expect("reopen");
        eprintln!("backend {backend:?}");
        test(catalog).await;
        db.cleanup().await;
    }
}

const HOME: &str = "/dteam/user/a/alice";

async fn list(c: &Catalog, who: &Caller, path: &str, recursive: bool, page: usize) -> Vec<String> {
    let dir = c.readable_dir(who, path).await.expect("readable");
    let mut cursor = Cursor::Dirs(0);
    let mut out = Vec::new();
    while cursor != Cursor::Done {
        let (entries, next) = c
            .list_page(&dir, recursive, true, cursor, page)
            .await
            .expect("page");
        for e in entries {
            out.push(match e {
                Entry::Dir(d) => format!("{}/", d.path),
                Entry::File(f, r) => format!(
                    "{} {}",
                    f.lfn,
                    r.iter()
                        .map(|x| x.se.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            });
        }
        cursor = next;
    }
    out
}

#[tokio::test]
async fn namespace_homes_permissions_and_bad_paths() {
    each_backend(async |c| {
        // The home and the way to it are made on first use.
        let out = c
            .create_directories(&alice(), &[format!("{HOME}/a/b/c"), "/dteam/data".into()])
            .await
            .expect("mkdir");
        ok(&BTreeMap::from_iter(
            out.iter()
                .filter(|(k, _)| k.contains("alice"))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_ref()
                            .map(|_| ())
                            .map_err(|e| DmsError::Internal(e.to_string())),
                    )
                }),
        ));
        assert!(
            matches!(
                out.get("/dteam/data"),
                Some(Err(DmsError::PermissionDenied(_)))
            ),
            "{out:?}"
        );
        let (dirs, _) = c
            .get_directories(&alice(), &[HOME.into(), "/dteam/user".into()])
            .await
            .expect("dirs");
        assert_eq!(dirs[HOME].perm.owner, "alice");
        assert_eq!(dirs[HOME].perm.mode, 0o755);
        assert_eq!(dirs["/dteam/user"].perm.owner, "dirac");
        // bob may read alice's home but not write there.
        let out = c
            .create_directories(&caller("bob", "dteam_user"), &[format!("{HOME}/x")])
            .await
            .expect("mkdir");
        assert!(matches!(
            err(&out, &format!("{HOME}/x")),
            DmsError::PermissionDenied(_)
        ));
        // The administrator makes a shared area for the production group.
        ok(&c
            .create_directories(&admin(), &["/dteam/data/prod".into()])
            .await
            .expect("mkdir"));
        ok(&c
            .change_owner(
                &admin(),
                &["/dteam/data/prod".into()],
                "carol",
                "dteam_prod",
                false,
            )
            .await
            .expect("chown"));
        ok(&c
            .change_mode(
                &caller("carol", "dteam_prod"),
                &["/dteam/data/prod".into()],
                0o775,
                false,
            )
            .await
            .expect("chmod"));
        ok(&c
            .create_directories(
                &caller("alice", "dteam_prod"),
                &["/dteam/data/prod/run1".into()],
            )
            .await
            .expect("mkdir"));
        let out = c
            .create_directories(&alice(), &["/dteam/data/prod/run2".into()])
            .await
            .expect("mkdir");
        assert!(
            matches!(
                err(&out, "/dteam/data/prod/run2"),
                DmsError::PermissionDenied(_)
            ),
            "{out:?}"
        );
        // Bad input, per item, nothing else disturbed.
        let bad = [
            "dteam/rel",
            "/dteam//x",
            "/dteam/../atlas",
            "/dteam/a\0b",
            "/atlas/data",
            "/",
        ];
        let out = c
            .create_directories(
                &alice(),
                &bad.iter()
                    .map(|s| s.to_string())
                    .chain([format!("{HOME}/ok")])
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("mkdir");
        for b in bad {
            assert!(out[b].is_err(), "{b} accepted");
        }
        assert!(out[&format!("{HOME}/ok")].is_ok());
        let long = format!("{HOME}/{}", "n".repeat(256));
        assert!(matches!(
            err(
                &c.create_directories(&alice(), std::slice::from_ref(&long))
                    .await
                    .expect("mkdir"),
                &long
            ),
            DmsError::InvalidArgument(_)
        ));
        // No depth limit (DIRAC's is 15).
        let deep = format!(
            "{HOME}/{}",
            (0..60)
                .map(|i| format!("d{i}"))
                .collect::<Vec<_>>()
                .join("/")
        );
        ok(&c
            .create_directories(&alice(), std::slice::from_ref(&deep))
            .await
            .expect("deep"));
        ok(&c
            .add_files(&alice(), vec![file(&format!("{deep}/f"), 3, "SE-A")])
            .await
            .expect("deep file"));
        let (usage, _) = c
            .directory_size(&alice(), &[HOME.into()])
            .await
            .expect("size");
        assert_eq!(usage[HOME].logical_files, 1);
        // An administrator of one VO does nothing in another.
        let out = c
            .create_directories(&admin(), &["/atlas/x".into()])
            .await
            .expect("mkdir");
        assert!(matches!(
            err(&out, "/atlas/x"),
            DmsError::PermissionDenied(_)
        ));
        // Removing: empty directories only; missing ones succeed.
        let out = c
            .remove_directories(
                &alice(),
                &[
                    format!("{HOME}/a"),
                    format!("{HOME}/ok"),
                    format!("{HOME}/nothing"),
                ],
            )
            .await
            .expect("rmdir");
        assert!(matches!(
            err(&out, &format!("{HOME}/a")),
            DmsError::FailedPrecondition(_)
        ));
        assert!(out[&format!("{HOME}/ok")].is_ok() && out[&format!("{HOME}/nothing")].is_ok());
    })
    .await;
}

#[tokio::test]
async fn files_replicas_and_usage_counters() {
    each_backend(async |c| {
        let a = alice();
        let f1 = format!("{HOME}/data/f1");
        let f2 = format!("{HOME}/data/sub/f2");
        ok(&c.add_files(&a, vec![file(&f1, 10, "SE-A"), file(&f2, 20, "SE-A")]).await.expect("add"));
        // The same registration again succeeds and adds only new replicas.
        let mut again = file(&f1, 10, "SE-B");
        let (files, _) = c.get_files(&a, std::slice::from_ref(&f1), false).await.expect("get");
        again.guid = files[&f1].0.guid.clone();
        ok(&c.add_files(&a, vec![again]).await.expect("re-add"));
        let (files, _) = c.get_files(&a, std::slice::from_ref(&f1), false).await.expect("get");
        let ses: Vec<&str> = files[&f1].1.iter().map(|r| r.se.as_str()).collect();
        assert_eq!(ses, ["SE-A", "SE-B"]);
        assert_eq!(files[&f1].0.checksum, "0000000b");
        // Conflicts and bad entries fail alone.
        let mut clash = file(&f1, 11, "SE-A");
        clash.guid = "other".into();
        let mut guid_taken = file(&format!("{HOME}/data/f3"), 1, "SE-A");
        guid_taken.guid = files[&f1].0.guid.clone();
        let mut bad_sum = file(&format!("{HOME}/data/f4"), 1, "SE-A");
        bad_sum.checksum = "xyz".into();
        let out = c
            .add_files(
                &a,
                vec![
                    clash,
                    guid_taken,
                    bad_sum,
                    file(&format!("{HOME}/data/f5"), 1, "NO-SUCH-SE"),
                    file(&format!("{HOME}/data"), 1, "SE-A"),
                    file("/atlas/f", 1, "SE-A"),
                    file(&format!("{HOME}/data/f6"), 6, "SE-B"),
                ],
            )
            .await
            .expect("add");
        assert!(matches!(err(&out, &f1), DmsError::AlreadyExists(_)));
        assert!(matches!(err(&out, &format!("{HOME}/data/f3")), DmsError::AlreadyExists(m) if m.contains("GUID")));
        assert!(matches!(err(&out, &format!("{HOME}/data/f4")), DmsError::InvalidArgument(_)));
        assert!(matches!(err(&out, &format!("{HOME}/data/f5")), DmsError::InvalidArgument(m) if m.contains("NO-SUCH-SE")));
        assert!(matches!(err(&out, &format!("{HOME}/data")), DmsError::AlreadyExists(m) if m.contains("directory")));
        assert!(matches!(err(&out, "/atlas/f"), DmsError::PermissionDenied(_)));
        assert!(out[&format!("{HOME}/data/f6")].is_ok());
        // A file where a directory is wanted.
        let out = c.create_directories(&a, &[format!("{f1}/x")]).await.expect("mkdir");
        assert!(err(&out, &format!("{f1}/x")).to_string().contains("is a file"));
        // Counters: logical and per SE, recursively.
        let (u, _) = c.directory_size(&a, &[format!("{HOME}/data")]).await.expect("size");
        let u = &u[&format!("{HOME}/data")];
        assert_eq!((u.logical_size, u.logical_files, u.directories), (36, 3, 1));
        assert_eq!(u.per_se["SE-A"], (30, 2));
        assert_eq!(u.per_se["SE-B"], (16, 2));
        // Replica removal, then the file; counters follow.
        ok(&c.remove_replicas(&a, &[(f1.clone(), "SE-B".into(), String::new()), (f1.clone(), "SE-B".into(), String::new())]).await.expect("rm replica"));
        ok(&c.remove_files(&a, &[f2.clone(), format!("{HOME}/data/never")]).await.expect("rm"));
        let (u, _) = c.directory_size(&a, &[format!("{HOME}/data")]).await.expect("size");
        let u = &u[&format!("{HOME}/data")];
        assert_eq!((u.logical_size, u.logical_files), (16, 2));
        assert_eq!(u.per_se.get("SE-A"), Some(&(10, 1)));
        assert_eq!(u.per_se.get("SE-B"), Some(&(6, 1)));
        let (kinds, _) = c.exists(&a, &[f1.clone(), f2.clone(), format!("{HOME}/data")]).await.expect("exists");
        assert_eq!((kinds[&f1].as_str(), kinds[&f2].as_str(), kinds[&format!("{HOME}/data")].as_str()), ("File", "", "Directory"));
        // Others read but do not remove alice's files.
        let bob = caller("bob", "dteam_user");
        let out = c.remove_files(&bob, std::slice::from_ref(&f1)).await.expect("rm");
        assert!(matches!(err(&out, &f1), DmsError::PermissionDenied(_)));
        assert!(c.get_files(&bob, std::slice::from_ref(&f1), false).await.expect("get").0.contains_key(&f1));
        ok(&c.change_mode(&a, std::slice::from_ref(&f1), 0o600, false).await.expect("chmod"));
        assert!(matches!(c.get_files(&bob, std::slice::from_ref(&f1), false).await.expect("get").1.get(&f1), Some(DmsError::PermissionDenied(_))));
        // Drifted counters are found and repaired.
        let home = c.dir(&dirac_dms::lfn::Lfn::parse(&format!("{HOME}/data")).expect("lfn")).await.expect("dir").expect("exists");
        sqlx::query(c.db().sql("UPDATE FC_DirUsage SET Size = Size + 1000, Files = Files - 7 WHERE DirID = ? AND SE = ''"))
            .bind(home.id)
            .execute(c.db().pool())
            .await
            .expect("corrupt");
        assert!(matches!(c.repair_usage(&a, HOME).await, Err(DmsError::PermissionDenied(_))));
        let (_, drift) = c.repair_usage(&admin(), HOME).await.expect("repair");
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!((drift[0].path.as_str(), drift[0].was, drift[0].now), (format!("{HOME}/data").as_str(), (1016, 0), (16, 2)));
        assert!(c.repair_usage(&admin(), HOME).await.expect("repair").1.is_empty(), "repaired");
    })
    .await;
}

#[tokio::test]
async fn listings_stream_in_pages_parents_first() {
    each_backend(async |c| {
        let a = alice();
        let files: Vec<NewFile> = (0..25)
            .map(|i| file(&format!("{HOME}/l/d{}/f{i:02}", i % 3), 1, "SE-A"))
            .collect();
        ok(&c.add_files(&a, files).await.expect("add"));
        ok(&c
            .create_directories(&a, &[format!("{HOME}/l/d1/deeper/still")])
            .await
            .expect("mkdir"));
        let flat = list(&c, &a, &format!("{HOME}/l"), false, 2).await;
        assert_eq!(
            flat,
            [
                format!("{HOME}/l/d0/"),
                format!("{HOME}/l/d1/"),
                format!("{HOME}/l/d2/")
            ]
        );
        let all = list(&c, &a, &format!("{HOME}/l"), true, 4).await;
        assert_eq!(all.len(), 3 + 2 + 25);
        let pos = |s: &str| all.iter().position(|x| x == s).expect(s);
        assert!(pos(&format!("{HOME}/l/d1/")) < pos(&format!("{HOME}/l/d1/deeper/")));
        assert!(pos(&format!("{HOME}/l/d1/deeper/")) < pos(&format!("{HOME}/l/d1/deeper/still/")));
        assert!(all.contains(&format!("{HOME}/l/d1/f01 SE-A")));
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "no entry twice across pages");
        assert!(matches!(
            c.readable_dir(&a, &format!("{HOME}/nope")).await,
            Err(DmsError::NotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn metadata_inherits_and_queries_with_or_and_parentheses() {
    each_backend(async |c| {
        let a = alice();
        for (name, kind, scope) in [
            ("energy", MetaType::Float, Scope::Directory),
            ("particle", MetaType::Str, Scope::Directory),
            ("run", MetaType::Int, Scope::File),
            ("taken", MetaType::Date, Scope::File),
        ] {
            c.add_field(&a, &Field { name: name.into(), kind, scope }).await.expect("field");
        }
        let clash = c.add_field(&a, &Field { name: "run".into(), kind: MetaType::Str, scope: Scope::File }).await;
        assert!(matches!(clash, Err(DmsError::AlreadyExists(_))));
        assert!(c.add_field(&a, &Field { name: "Size".into(), kind: MetaType::Int, scope: Scope::File }).await.is_err());
        let m = format!("{HOME}/mc");
        let mut files = Vec::new();
        for (dir, n) in [("e5/electron", 2), ("e20/electron", 2), ("e20/photon", 2), ("e20/muon", 1), ("e50/photon", 1)] {
            for i in 0..n {
                files.push(file(&format!("{m}/{dir}/f{i}"), 100 + i, if dir.contains("muon") { "SE-B" } else { "SE-A" }));
            }
        }
        ok(&c.add_files(&a, files).await.expect("add"));
        let set = |path: String, pairs: &[(&str, &str)]| {
            let values: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let c = &c;
            let a = a.clone();
            async move { c.set_metadata(&a, &path, &values).await }
        };
        for (dir, e) in [("e5", "5"), ("e20", "20"), ("e50", "50.5")] {
            set(format!("{m}/{dir}"), &[("energy", e)]).await.expect("energy");
        }
        for dir in ["e5/electron", "e20/electron", "e20/photon", "e20/muon", "e50/photon"] {
            let particle = dir.split('/').nth(1).unwrap_or_default();
            set(format!("{m}/{dir}"), &[("particle", particle)]).await.expect("particle");
        }
        set(format!("{m}/e20/photon/f0"), &[("run", "7"), ("taken", "2024-03-01")]).await.expect("file meta");
        set(format!("{m}/e20/photon/f1"), &[("run", "8")]).await.expect("file meta");
        // Bad metadata, each refused with the reason.
        assert!(matches!(set(format!("{m}/e20/electron"), &[("energy", "7")]).await, Err(DmsError::FailedPrecondition(s)) if s.contains("above")));
        assert!(matches!(set(m.clone(), &[("energy", "7")]).await, Err(DmsError::FailedPrecondition(s)) if s.contains("below")));
        assert!(matches!(set(format!("{m}/e5"), &[("run", "1")]).await, Err(DmsError::InvalidArgument(s)) if s.contains("file field")));
        assert!(matches!(set(format!("{m}/e5"), &[("energy", "hot")]).await, Err(DmsError::InvalidArgument(_))));
        assert!(matches!(set(format!("{m}/e5"), &[("nosuch", "1")]).await, Err(DmsError::InvalidArgument(_))));
        assert!(matches!(c.set_metadata(&caller("bob", "dteam_user"), &format!("{m}/e5"), &BTreeMap::from([("energy".to_string(), "6".to_string())])).await, Err(DmsError::PermissionDenied(_))));
        // Inherited values come with their source.
        let (meta, _) = c.get_metadata(&a, &[format!("{m}/e20/photon/f0")]).await.expect("get");
        let v = &meta[&format!("{m}/e20/photon/f0")];
        assert_eq!(v["energy"].0.display(), "20");
        assert_eq!(v["energy"].1.as_deref(), Some(format!("{m}/e20").as_str()));
        assert_eq!(v["run"].0.display(), "7");
        assert_eq!(v["taken"].0.display(), "2024-03-01T00:00:00Z");
        let find = |q: &str| {
            let c = &c;
            let a = a.clone();
            let q = q.to_string();
            let root = m.clone();
            async move {
                let dir = c.readable_dir(&a, &root).await?;
                let compiled = c.compile(&a, &q).await?;
                let mut out = Vec::new();
                let mut after = 0;
                loop {
                    let page = c.find_page(dir.id, compiled.as_ref(), after, 3).await?;
                    let Some(last) = page.last() else { break };
                    after = last.0;
                    out.extend(page.into_iter().map(|(_, l)| l.trim_start_matches(&format!("{root}/")).to_string()));
                }
                out.sort();
                Ok::<_, DmsError>(out)
            }
        };
        assert_eq!(
            find("energy>10 and (particle=electron or particle=photon)").await.expect("q"),
            ["e20/electron/f0", "e20/electron/f1", "e20/photon/f0", "e20/photon/f1", "e50/photon/f0"]
        );
        assert_eq!(find("energy=5,50.5 particle!=photon").await.expect("q"), ["e5/electron/f0", "e5/electron/f1"]);
        assert_eq!(find("run=Any").await.expect("q"), ["e20/photon/f0", "e20/photon/f1"]);
        assert_eq!(find("run=Missing and not energy<=20").await.expect("q"), ["e50/photon/f0"]);
        assert_eq!(find("SE=SE-B").await.expect("q"), ["e20/muon/f0"]);
        assert_eq!(find("Size>100 and energy in (5, 20)").await.expect("q"), ["e20/electron/f1", "e20/photon/f1", "e5/electron/f1"]);
        assert_eq!(find("taken>=2024-01-01 and taken<'2024-06-01 00:00:00'").await.expect("q"), ["e20/photon/f0"]);
        assert_eq!(find("").await.expect("all").len(), 8);
        // Injection attempts are values, unknown fields are named.
        assert!(find("particle='x'' or 1=1 --'").await.expect("q").is_empty());
        assert!(find("particle=\"photon\" or Name='f0; DROP TABLE FC_Files'").await.expect("q").len() == 3);
        assert!(matches!(find("colour=red").await, Err(DmsError::InvalidArgument(s)) if s.contains("colour")));
        assert!(matches!(find("energy>").await, Err(DmsError::InvalidArgument(_))));
        // Removing a field removes its values.
        c.remove_field(&a, "run").await.expect("remove field");
        assert!(matches!(find("run=Any").await, Err(DmsError::InvalidArgument(_))));
    })
    .await;
}

#[tokio::test]
async fn datasets_freeze_and_release() {
    each_backend(async |c| {
        let a = alice();
        c.add_field(
            &a,
            &Field {
                name: "kind".into(),
                kind: MetaType::Str,
                scope: Scope::File,
            },
        )
        .await
        .expect("field");
        ok(&c
            .add_files(
                &a,
                (0..4)
                    .map(|i| file(&format!("{HOME}/ds/f{i}"), 10, "SE-A"))
                    .collect(),
            )
            .await
            .expect("add"));
        for i in 0..3 {
            c.set_metadata(
                &a,
                &format!("{HOME}/ds/f{i}"),
                &BTreeMap::from([("kind".to_string(), "raw".to_string())]),
            )
            .await
            .expect("meta");
        }
        let name = format!("{HOME}/raw-files");
        let d = c
            .add_dataset(&a, &name, &format!("{HOME}/ds"), "kind=raw")
            .await
            .expect("dataset");
        assert_eq!((d.status.as_str(), d.files, d.size), ("Dynamic", 3, 30));
        assert!(matches!(
            c.add_dataset(&a, &name, HOME, "").await,
            Err(DmsError::AlreadyExists(_))
        ));
        assert!(matches!(
            c.add_dataset(&a, &format!("{HOME}/bad"), HOME, "kind=")
                .await,
            Err(DmsError::InvalidArgument(_))
        ));
        let frozen = c.freeze_dataset(&a, &name).await.expect("freeze");
        assert_eq!(frozen.status, "Frozen");
        c.set_metadata(
            &a,
            &format!("{HOME}/ds/f3"),
            &BTreeMap::from([("kind".to_string(), "raw".to_string())]),
        )
        .await
        .expect("meta");
        let files = c.dataset_page(&a, &frozen, 0, 100).await.expect("files");
        assert_eq!(files.len(), 3, "a frozen dataset keeps its list");
        let released = c.release_dataset(&a, &name).await.expect("release");
        assert_eq!(released.files, 4);
        assert_eq!(
            c.dataset_page(&a, &released, 0, 100)
                .await
                .expect("files")
                .len(),
            4
        );
        assert!(matches!(
            c.remove_dataset(&caller("bob", "dteam_user"), &name).await,
            Err(DmsError::PermissionDenied(_))
        ));
        assert_eq!(c.datasets(&a, "/dteam").await.expect("list").len(), 1);
        c.remove_dataset(&a, &name).await.expect("remove");
        assert!(c.datasets(&a, "/dteam").await.expect("list").is_empty());
    })
    .await;
}

#[tokio::test]
async fn ancestry_to_any_depth() {
    each_backend(async |c| {
        let a = alice();
        let f = |n: &str| format!("{HOME}/gen/{n}");
        ok(&c.add_files(&a, ["raw", "reco", "dst", "ntuple"].iter().map(|n| file(&f(n), 1, "SE-A")).collect()).await.expect("add"));
        ok(&c.add_ancestors(&a, &[(f("reco"), vec![f("raw")])]).await.expect("link"));
        ok(&c.add_ancestors(&a, &[(f("dst"), vec![f("reco")])]).await.expect("link"));
        ok(&c.add_ancestors(&a, &[(f("ntuple"), vec![f("dst")])]).await.expect("link"));
        let (up, _) = c.lineage(&a, &[f("ntuple")], 0, false).await.expect("ancestors");
        assert_eq!(up[&f("ntuple")], [(f("dst"), 1), (f("reco"), 2), (f("raw"), 3)]);
        let (up, _) = c.lineage(&a, &[f("ntuple")], 2, false).await.expect("ancestors");
        assert_eq!(up[&f("ntuple")].len(), 2);
        let (down, _) = c.lineage(&a, &[f("raw")], 0, true).await.expect("descendants");
        assert_eq!(down[&f("raw")], [(f("reco"), 1), (f("dst"), 2), (f("ntuple"), 3)]);
        let out = c.add_ancestors(&a, &[(f("raw"), vec![f("ntuple")]), (f("reco"), vec![format!("{HOME}/gen/none")])]).await.expect("link");
        assert!(matches!(err(&out, &f("raw")), DmsError::InvalidArgument(m) if m.contains("own ancestor")));
        assert!(err(&out, &f("reco")).to_string().contains("no such file"));
    })
    .await;
}

/// Concurrent registrations that all need the same new directories: the
/// losers of each race plan again and every file gets in, once.
#[tokio::test]
async fn concurrent_registrations_into_new_directories_all_land() {
    each_backend(async |c| {
        let c = std::sync::Arc::new(c);
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let files: Vec<NewFile> = (0..50u64)
                    .map(|i| {
                        file(
                            &format!("{HOME}/race/d{}/w{w}-f{i}", i % 5),
                            w * 100 + i,
                            "SE-A",
                        )
                    })
                    .collect();
                c.add_files(&alice(), files).await
            }));
        }
        for t in tasks {
            let out = t.await.expect("task").expect("add");
            ok(&out);
            assert_eq!(out.len(), 50);
        }
        let (u, _) = c
            .directory_size(&alice(), &[format!("{HOME}/race")])
            .await
            .expect("size");
        let u = &u[&format!("{HOME}/race")];
        assert_eq!((u.logical_files, u.directories), (200, 5));
        let (_, drift) = c.repair_usage(&admin(), HOME).await.expect("repair");
        assert!(
            drift.is_empty(),
            "the counters are exact under races: {drift:?}"
        );
    })
    .await;
}
