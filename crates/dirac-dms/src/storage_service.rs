//! The StorageElement service (DIRAC's `dips`): clients read and write the
//! installation's storage elements through it, whatever protocol the
//! server uses behind (a local directory, XRootD, WebDAV, S3 with the
//! server's credentials). Uploads are streamed to a scratch file, checked
//! against the announced size and Adler32, then stored; a mismatch leaves
//! nothing behind. Every path is checked against the catalog's
//! permissions first.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use dirac_core::auth::identity;
use dirac_core::config::SeAccess;
use dirac_proto::dms::{
    self as pb, Empty, ObjectChunk, ObjectHeader, ObjectRef, ObjectRefs, ObjectStat, Occupancy,
    PathResult, PutObjectResponse, ReplicateRequest, ReplicateResponse, SeRef, StatResponse,
    StorageElementInfo, StorageElementList, Urls, UrlsRequest, UrlsResponse,
};
use dirac_storage::file::Part;
use dirac_storage::{Adler32, StorageElements, StorageError, checksum};
use futures::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{Catalog, Outcome};
use crate::error::DmsError;
use crate::perms::Caller;
use crate::service::path_result;

/// Bytes per streamed chunk.
pub const CHUNK: usize = 1 << 20;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ObjectChunk, Status>> + Send>>;

pub struct StorageService {
    pub catalog: Arc<Catalog>,
    pub ses: Arc<StorageElements>,
    /// Where uploads and downloads are staged.
    pub scratch: PathBuf,
    /// Operations.DataManagement.FailoverSEs.
    pub failover: Vec<String>,
}

fn access(a: SeAccess) -> String {
    format!("{a:?}")
}

impl StorageService {
    fn scratch_file(&self, what: &str) -> PathBuf {
        self.scratch
            .join(format!(".{what}-{:016x}", rand::random::<u64>()))
    }
}

/// A scratch file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tonic::async_trait]
impl pb::storage_element_server::StorageElement for StorageService {
    async fn put(
        &self,
        req: Request<Streaming<ObjectChunk>>,
    ) -> Result<Response<PutObjectResponse>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(
                DmsError::InvalidArgument("empty upload: a header must come first".into()).into(),
            );
        };
        let Some(pb::object_chunk::Kind::Header(ObjectHeader {
            se,
            lfn,
            size,
            adler32,
        })) = first.kind
        else {
            return Err(DmsError::InvalidArgument(
                "the first message of an upload must be its header".into(),
            )
            .into());
        };
        if adler32.len() > 8
            || !adler32.bytes().all(|b| b.is_ascii_hexdigit())
            || adler32.is_empty()
        {
            return Err(DmsError::InvalidArgument(format!(
                "'{adler32}' is not an Adler32 checksum"
            ))
            .into());
        }
        let storage = self.ses.get(&se).map_err(DmsError::from)?;
        storage.writer().map_err(DmsError::from)?;
        let l = self.catalog.may_write_file(&who, &lfn).await?;
        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| {
                DmsError::Unavailable(format!("scratch {}: {e}", self.scratch.display()))
            })?;
        let target = self.scratch_file("put");
        let (part, mut file) = Part::create(&target)
            .await
            .map_err(|e| DmsError::Unavailable(format!("scratch: {e}")))?;
        let mut sum = Adler32::new();
        let mut got = 0u64;
        while let Some(msg) = stream.message().await? {
            match msg.kind {
                Some(pb::object_chunk::Kind::Data(bytes)) => {
                    got += bytes.len() as u64;
                    if got > size {
                        return Err(DmsError::InvalidArgument(format!(
                            "{l}: more data than the announced {size} bytes"
                        ))
                        .into());
                    }
                    sum.update(&bytes);
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| DmsError::from(StorageError::io("scratch", &e)))?;
                }
                _ => {
                    return Err(DmsError::InvalidArgument(
                        "only data may follow the header".into(),
                    )
                    .into());
                }
            }
        }
        if got != size {
            return Err(DmsError::InvalidArgument(format!(
                "{l}: {got} bytes arrived, {size} were announced"
            ))
            .into());
        }
        if !checksum::same(&sum.hex(), &adler32) {
            return Err(DmsError::InvalidArgument(format!(
                "{l}: checksum mismatch: announced {adler32}, received {}",
                sum.hex()
            ))
            .into());
        }
        part.commit(file)
            .await
            .map_err(|e| DmsError::Unavailable(format!("scratch: {e}")))?;
        // The checked upload is handed over (moved, on a local SE); the
        // guard removes whatever a failure leaves.
        let _cleanup = Scratch(target.clone());
        let known = dirac_storage::Stat {
            size: got,
            adler32: Some(sum.hex()),
        };
        let stored = storage
            .put_owned(l.as_str(), &target, &known)
            .await
            .map_err(DmsError::from)?;
        tracing::info!(se = %se, lfn = %l, size, "file stored");
        Ok(Response::new(PutObjectResponse {
            size: stored.size,
            adler32: stored.adler32.unwrap_or_else(|| sum.hex()),
        }))
    }

    type GetStream = ChunkStream;

    async fn get(&self, req: Request<ObjectRef>) -> Result<Response<ChunkStream>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let r = req.into_inner();
        let storage = self.ses.get(&r.se).map_err(DmsError::from)?;
        let l = self.catalog.may_read_file(&who, &r.lfn).await?;
        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| {
                DmsError::Unavailable(format!("scratch {}: {e}", self.scratch.display()))
            })?;
        let scratch = Scratch(self.scratch_file("get"));
        let stat = storage
            .get(l.as_str(), &scratch.0)
            .await
            .map_err(DmsError::from)?;
        let adler32 = match stat.adler32 {
            Some(a) => a,
            None => {
                checksum::of_file(&scratch.0)
                    .await
                    .map_err(|e| DmsError::Unavailable(format!("scratch: {e}")))?
                    .1
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let header = ObjectChunk {
            kind: Some(pb::object_chunk::Kind::Header(ObjectHeader {
                se: r.se,
                lfn: l.to_string(),
                size: stat.size,
                adler32,
            })),
        };
        tokio::spawn(async move {
            let scratch = scratch;
            if tx.send(Ok(header)).await.is_err() {
                return;
            }
            let mut file = match tokio::fs::File::open(&scratch.0).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!("scratch: {e}"))))
                        .await;
                    return;
                }
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        let chunk = ObjectChunk {
                            kind: Some(pb::object_chunk::Kind::Data(buf[..n].to_vec())),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!("scratch: {e}"))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn remove(&self, req: Request<ObjectRefs>) -> Result<Response<PathResult>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let r = req.into_inner();
        let storage = self.ses.get(&r.se).map_err(DmsError::from)?;
        let mut out = Outcome::new();
        for lfn in r.lfns {
            let done = async {
                let l = self.catalog.may_write_file(&who, &lfn).await?;
                storage.remove(l.as_str()).await.map_err(DmsError::from)
            }
            .await;
            out.insert(lfn, done);
        }
        Ok(Response::new(path_result(out)))
    }

    async fn stat(&self, req: Request<ObjectRefs>) -> Result<Response<StatResponse>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let r = req.into_inner();
        let storage = self.ses.get(&r.se).map_err(DmsError::from)?;
        let mut resp = StatResponse::default();
        for lfn in r.lfns {
            let done = async {
                let l = self.catalog.may_read_file(&who, &lfn).await?;
                storage.stat(l.as_str()).await.map_err(DmsError::from)
            }
            .await;
            match done {
                Ok(Some(s)) => {
                    resp.objects.insert(
                        lfn,
                        ObjectStat {
                            size: s.size,
                            adler32: s.adler32.unwrap_or_default(),
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    resp.failed.insert(lfn, dirac_core::error::item_error(&e));
                }
            }
        }
        Ok(Response::new(resp))
    }

    async fn get_occupancy(&self, req: Request<SeRef>) -> Result<Response<Occupancy>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let storage = self.ses.get(&req.into_inner().se).map_err(DmsError::from)?;
        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| DmsError::Unavailable(format!("scratch: {e}")))?;
        let o = storage
            .occupancy_for(&who.vo, &self.scratch)
            .await
            .map_err(DmsError::from)?;
        Ok(Response::new(Occupancy {
            total: o.total,
            free: o.free,
        }))
    }

    async fn replicate(
        &self,
        req: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateResponse>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let r = req.into_inner();
        let source = self.ses.get(&r.source_se).map_err(DmsError::from)?;
        let dest = self.ses.get(&r.dest_se).map_err(DmsError::from)?;
        let l = self.catalog.may_read_file(&who, &r.lfn).await?;
        self.catalog.may_write_file(&who, &r.lfn).await?;
        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| DmsError::Unavailable(format!("scratch: {e}")))?;
        let expected = (!r.adler32.is_empty()).then_some(r.adler32.as_str());
        let (stat, third_party) =
            dirac_storage::se::replicate(&source, &dest, l.as_str(), expected, &self.scratch)
                .await
                .map_err(DmsError::from)?;
        tracing::info!(lfn = %l, from = %r.source_se, to = %r.dest_se, third_party, "file replicated");
        Ok(Response::new(ReplicateResponse {
            size: stat.size,
            adler32: stat.adler32.unwrap_or_default(),
            third_party,
        }))
    }

    async fn get_access_urls(
        &self,
        req: Request<UrlsRequest>,
    ) -> Result<Response<UrlsResponse>, Status> {
        let who = Caller::from_identity(identity(&req)?);
        let r = req.into_inner();
        let protocol = (!r.protocol.is_empty()).then_some(r.protocol.as_str());
        let (found, failed) = self.catalog.get_files(&who, &r.lfns, false).await?;
        let mut resp = UrlsResponse {
            failed: failed
                .iter()
                .map(|(k, e)| (k.clone(), dirac_core::error::item_error(e)))
                .collect(),
            ..Default::default()
        };
        for (lfn, (_, replicas)) in found {
            let urls: Vec<String> = replicas
                .iter()
                .filter_map(|rep| self.ses.get(&rep.se).ok())
                .flat_map(|se| se.urls(&lfn, protocol))
                .collect();
            resp.urls.insert(lfn, Urls { urls });
        }
        Ok(Response::new(resp))
    }

    async fn list_storage_elements(
        &self,
        _req: Request<Empty>,
    ) -> Result<Response<StorageElementList>, Status> {
        Ok(Response::new(StorageElementList {
            storage_elements: self
                .ses
                .iter()
                .map(|se| StorageElementInfo {
                    name: se.name.clone(),
                    site: se.config.site.clone().unwrap_or_default(),
                    protocols: se
                        .config
                        .protocols
                        .iter()
                        .map(|p| p.protocol.clone())
                        .collect(),
                    read_access: access(se.config.read_access),
                    write_access: access(se.config.write_access),
                    failover: self.failover.contains(&se.name),
                })
                .collect(),
        }))
    }
}
