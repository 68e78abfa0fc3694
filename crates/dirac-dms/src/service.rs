//! gRPC handlers of the FileCatalog: proto in, [`Catalog`] calls, proto
//! out. Per-item failures go into the answer's `failed` map; only a bad
//! request as a whole is an RPC error.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use dirac_core::auth::identity;
use dirac_core::error::item_error;
use dirac_proto::common::ItemError;
use dirac_proto::dms::{
    self as pb, AddAncestorsRequest, AddFilesRequest, ChangeModeRequest, ChangeOwnerRequest,
    DatasetRef, Datasets, DatasetsRequest, DirectoryInfo, DirectorySize, DirectorySizeResponse,
    Empty, EntryBatch, ExistsResponse, FileInfo, FindRequest, GetFilesRequest, GetFilesResponse,
    GetMetadataResponse, LfnBatch, Lineage, LineageRequest, LineageResponse, ListRequest,
    MetaValue, MetadataField, MetadataFields, PathMetadata, PathResult, Paths, Related,
    RemoveMetadataRequest, RepairUsageRequest, RepairUsageResponse, ReplicasRequest, SeUsage,
    SetMetadataRequest, UsageDifference,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::catalog::datasets::Dataset;
use crate::catalog::meta::{Field, MetaType, Scope, Value};
use crate::catalog::{Catalog, Cursor, DirRow, Entry, FileRow, NewFile, Outcome, ReplicaRow};
use crate::error::DmsError;
use crate::perms::Caller;

/// Entries per streamed message.
const PAGE: usize = 1000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct CatalogService(pub Arc<Catalog>);

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    Ok(Caller::from_identity(identity(req)?))
}

pub fn path_result(out: Outcome) -> PathResult {
    let mut r = PathResult::default();
    for (k, v) in out {
        match v {
            Ok(()) => r.succeeded.push(k),
            Err(e) => {
                r.failed.insert(k, item_error(&e));
            }
        }
    }
    r
}

fn failed_map(failed: BTreeMap<String, DmsError>) -> std::collections::HashMap<String, ItemError> {
    failed
        .into_iter()
        .map(|(k, e)| (k, item_error(&e)))
        .collect()
}

fn mode(m: u32) -> u32 {
    m
}

pub fn dir_info(d: &DirRow) -> DirectoryInfo {
    DirectoryInfo {
        path: d.path.clone(),
        owner: d.perm.owner.clone(),
        group: d.perm.group.clone(),
        mode: mode(d.perm.mode),
        creation_time: d.ctime,
        modification_time: d.mtime,
    }
}

pub fn file_info(f: &FileRow, replicas: &[ReplicaRow]) -> FileInfo {
    FileInfo {
        lfn: f.lfn.clone(),
        size: u64::try_from(f.size).unwrap_or(0),
        checksum: f.checksum.clone(),
        checksum_type: f.checksum_type.clone(),
        guid: f.guid.clone(),
        owner: f.perm.owner.clone(),
        group: f.perm.group.clone(),
        mode: mode(f.perm.mode),
        status: f.status.clone(),
        creation_time: f.ctime,
        modification_time: f.mtime,
        replicas: replicas
            .iter()
            .map(|r| pb::Replica {
                se: r.se.clone(),
                pfn: r.pfn.clone().unwrap_or_default(),
                status: r.status.clone(),
            })
            .collect(),
    }
}

fn meta_value(v: &Value) -> MetaValue {
    use pb::meta_value::Value as V;
    MetaValue {
        value: Some(match v {
            Value::Int(i) => V::Int(*i),
            Value::Float(f) => V::Float(*f),
            Value::Str(s) => V::String(s.clone()),
            Value::Date(_) => V::Date(v.display()),
        }),
    }
}

/// A proto value as text, to be typed by its field.
fn value_text(v: &MetaValue) -> Result<String, Status> {
    use pb::meta_value::Value as V;
    match &v.value {
        Some(V::Int(i)) => Ok(i.to_string()),
        Some(V::Float(f)) => Ok(f.to_string()),
        Some(V::String(s)) | Some(V::Date(s)) => Ok(s.clone()),
        None => Err(DmsError::InvalidArgument("a metadata value is empty".into()).into()),
    }
}

fn dataset_pb(d: &Dataset) -> pb::Dataset {
    pb::Dataset {
        name: d.name.clone(),
        path: d.path.clone(),
        query: d.query.clone(),
        status: d.status.clone(),
        owner: d.owner.clone(),
        group: d.group.clone(),
        files: d.files,
        size: d.size,
        creation_time: d.ctime,
    }
}

fn replica_refs(r: ReplicasRequest) -> Vec<(String, String, String)> {
    r.replicas
        .into_iter()
        .map(|x| (x.lfn, x.se, x.pfn))
        .collect()
}

/// Stream pages of LFNs from `next(after)` until it answers an empty page.
fn lfn_stream<F, Fut>(next: F) -> BoxStream<LfnBatch>
where
    F: Fn(i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<(i64, String)>, DmsError>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut after = 0;
        loop {
            match next(after).await {
                Ok(page) => {
                    let Some(last) = page.last() else { return };
                    after = last.0;
                    let full = page.len() == PAGE;
                    let batch = LfnBatch {
                        lfns: page.into_iter().map(|(_, l)| l).collect(),
                    };
                    if tx.send(Ok(batch)).await.is_err() || !full {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl pb::file_catalog_server::FileCatalog for CatalogService {
    async fn create_directories(
        &self,
        req: Request<Paths>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let out = self
            .0
            .create_directories(&who, &req.into_inner().paths)
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn remove_directories(
        &self,
        req: Request<Paths>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let out = self
            .0
            .remove_directories(&who, &req.into_inner().paths)
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn add_files(
        &self,
        req: Request<AddFilesRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let files = req
            .into_inner()
            .files
            .into_iter()
            .map(|f| NewFile {
                lfn: f.lfn,
                size: f.size,
                checksum: f.checksum,
                checksum_type: f.checksum_type,
                guid: f.guid,
                mode: f.mode,
                replicas: f.replicas.into_iter().map(|r| (r.se, r.pfn)).collect(),
                guid_generated: false,
            })
            .collect();
        let out = self.0.add_files(&who, files).await?;
        Ok(Response::new(path_result(out)))
    }

    async fn remove_files(&self, req: Request<Paths>) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let out = self.0.remove_files(&who, &req.into_inner().paths).await?;
        Ok(Response::new(path_result(out)))
    }

    async fn add_replicas(
        &self,
        req: Request<ReplicasRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let out = self
            .0
            .add_replicas(&who, &replica_refs(req.into_inner()))
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn remove_replicas(
        &self,
        req: Request<ReplicasRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let out = self
            .0
            .remove_replicas(&who, &replica_refs(req.into_inner()))
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn exists(&self, req: Request<Paths>) -> Result<Response<ExistsResponse>, Status> {
        let who = caller(&req)?;
        let (kinds, failed) = self.0.exists(&who, &req.into_inner().paths).await?;
        Ok(Response::new(ExistsResponse {
            kinds: kinds.into_iter().collect(),
            failed: failed_map(failed),
        }))
    }

    async fn get_files(
        &self,
        req: Request<GetFilesRequest>,
    ) -> Result<Response<GetFilesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let (found, failed) = self.0.get_files(&who, &r.lfns, r.all_status).await?;
        Ok(Response::new(GetFilesResponse {
            files: found
                .into_iter()
                .map(|(k, (f, reps))| (k, file_info(&f, &reps)))
                .collect(),
            failed: failed_map(failed),
        }))
    }

    async fn get_directories(
        &self,
        req: Request<Paths>,
    ) -> Result<Response<GetFilesResponse>, Status> {
        // Directories answer as FileInfo without size or replicas.
        let who = caller(&req)?;
        let (found, failed) = self
            .0
            .get_directories(&who, &req.into_inner().paths)
            .await?;
        Ok(Response::new(GetFilesResponse {
            files: found
                .into_iter()
                .map(|(k, d)| {
                    (
                        k,
                        FileInfo {
                            lfn: d.path.clone(),
                            owner: d.perm.owner.clone(),
                            group: d.perm.group.clone(),
                            mode: d.perm.mode,
                            creation_time: d.ctime,
                            modification_time: d.mtime,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            failed: failed_map(failed),
        }))
    }

    type ListDirectoryStream = BoxStream<EntryBatch>;

    async fn list_directory(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<Self::ListDirectoryStream>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let dir = self.0.readable_dir(&who, &r.path).await?;
        let catalog = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut cursor = Cursor::Dirs(0);
            while cursor != Cursor::Done {
                match catalog
                    .list_page(&dir, r.recursive, r.with_replicas, cursor, PAGE)
                    .await
                {
                    Ok((entries, next)) => {
                        cursor = next;
                        if entries.is_empty() {
                            continue;
                        }
                        let batch = EntryBatch {
                            entries: entries
                                .iter()
                                .map(|e| pb::Entry {
                                    kind: Some(match e {
                                        Entry::Dir(d) => pb::entry::Kind::Directory(dir_info(d)),
                                        Entry::File(f, reps) => {
                                            pb::entry::Kind::File(file_info(f, reps))
                                        }
                                    }),
                                })
                                .collect(),
                        };
                        if tx.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_directory_size(
        &self,
        req: Request<Paths>,
    ) -> Result<Response<DirectorySizeResponse>, Status> {
        let who = caller(&req)?;
        let (sizes, failed) = self.0.directory_size(&who, &req.into_inner().paths).await?;
        Ok(Response::new(DirectorySizeResponse {
            sizes: sizes
                .into_iter()
                .map(|(k, u)| {
                    (
                        k,
                        DirectorySize {
                            logical_size: u.logical_size,
                            logical_files: u.logical_files,
                            directories: u.directories,
                            per_se: u
                                .per_se
                                .into_iter()
                                .map(|(se, (size, files))| (se, SeUsage { size, files }))
                                .collect(),
                        },
                    )
                })
                .collect(),
            failed: failed_map(failed),
        }))
    }

    async fn repair_directory_usage(
        &self,
        req: Request<RepairUsageRequest>,
    ) -> Result<Response<RepairUsageResponse>, Status> {
        let who = caller(&req)?;
        let (directories, drift) = self.0.repair_usage(&who, &req.into_inner().path).await?;
        tracing::info!(
            directories,
            drifted = drift.len(),
            "usage counters repaired"
        );
        Ok(Response::new(RepairUsageResponse {
            directories,
            differences: drift
                .into_iter()
                .map(|d| UsageDifference {
                    path: d.path,
                    se: d.se,
                    size_was: d.was.0,
                    size_now: d.now.0,
                    files_was: d.was.1,
                    files_now: d.now.1,
                })
                .collect(),
        }))
    }

    async fn change_mode(
        &self,
        req: Request<ChangeModeRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let out = self
            .0
            .change_mode(&who, &r.paths, r.mode, r.recursive)
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn change_owner(
        &self,
        req: Request<ChangeOwnerRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let out = self
            .0
            .change_owner(&who, &r.paths, &r.owner, &r.group, r.recursive)
            .await?;
        Ok(Response::new(path_result(out)))
    }

    async fn add_metadata_field(
        &self,
        req: Request<MetadataField>,
    ) -> Result<Response<Empty>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let field = Field {
            name: r.name,
            kind: MetaType::parse(&r.r#type)?,
            scope: Scope::parse(&r.scope)?,
        };
        self.0.add_field(&who, &field).await?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_metadata_field(
        &self,
        req: Request<MetadataField>,
    ) -> Result<Response<Empty>, Status> {
        let who = caller(&req)?;
        self.0.remove_field(&who, &req.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_metadata_fields(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<MetadataFields>, Status> {
        let who = caller(&req)?;
        let fields = self.0.fields(&who.vo).await?;
        Ok(Response::new(MetadataFields {
            fields: fields
                .into_values()
                .map(|f| MetadataField {
                    name: f.name,
                    r#type: f.kind.name().into(),
                    scope: f.scope.name().into(),
                })
                .collect(),
        }))
    }

    async fn set_metadata(
        &self,
        req: Request<SetMetadataRequest>,
    ) -> Result<Response<Empty>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let mut values = BTreeMap::new();
        for (k, v) in &r.values {
            values.insert(k.clone(), value_text(v)?);
        }
        self.0.set_metadata(&who, &r.path, &values).await?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_metadata(
        &self,
        req: Request<RemoveMetadataRequest>,
    ) -> Result<Response<Empty>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        self.0.remove_metadata(&who, &r.path, &r.names).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_metadata(
        &self,
        req: Request<Paths>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        let who = caller(&req)?;
        let (found, failed) = self.0.get_metadata(&who, &req.into_inner().paths).await?;
        Ok(Response::new(GetMetadataResponse {
            metadata: found
                .into_iter()
                .map(|(path, values)| {
                    let mut pm = PathMetadata::default();
                    for (name, (v, from)) in values {
                        pm.values.insert(name.clone(), meta_value(&v));
                        if let Some(from) = from {
                            pm.inherited_from.insert(name, from);
                        }
                    }
                    (path, pm)
                })
                .collect(),
            failed: failed_map(failed),
        }))
    }

    type FindFilesStream = BoxStream<LfnBatch>;

    async fn find_files(
        &self,
        req: Request<FindRequest>,
    ) -> Result<Response<Self::FindFilesStream>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let dir = self.0.readable_dir(&who, &r.path).await?;
        let compiled = Arc::new(self.0.compile(&who, &r.query).await?);
        let catalog = self.0.clone();
        Ok(Response::new(lfn_stream(move |after| {
            let (catalog, compiled) = (catalog.clone(), compiled.clone());
            async move {
                catalog
                    .find_page(dir.id, compiled.as_ref().as_ref(), after, PAGE)
                    .await
            }
        })))
    }

    async fn add_dataset(
        &self,
        req: Request<pb::Dataset>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let d = self.0.add_dataset(&who, &r.name, &r.path, &r.query).await?;
        Ok(Response::new(dataset_pb(&d)))
    }

    async fn freeze_dataset(
        &self,
        req: Request<DatasetRef>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let who = caller(&req)?;
        let d = self.0.freeze_dataset(&who, &req.into_inner().name).await?;
        Ok(Response::new(dataset_pb(&d)))
    }

    async fn release_dataset(
        &self,
        req: Request<DatasetRef>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let who = caller(&req)?;
        let d = self.0.release_dataset(&who, &req.into_inner().name).await?;
        Ok(Response::new(dataset_pb(&d)))
    }

    async fn remove_dataset(&self, req: Request<DatasetRef>) -> Result<Response<Empty>, Status> {
        let who = caller(&req)?;
        self.0.remove_dataset(&who, &req.into_inner().name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn get_datasets(
        &self,
        req: Request<DatasetsRequest>,
    ) -> Result<Response<Datasets>, Status> {
        let who = caller(&req)?;
        let path = req.into_inner().path;
        let path = if path.is_empty() {
            format!("/{}", who.vo)
        } else {
            path
        };
        let list = self.0.datasets(&who, &path).await?;
        Ok(Response::new(Datasets {
            datasets: list.iter().map(dataset_pb).collect(),
        }))
    }

    type GetDatasetFilesStream = BoxStream<LfnBatch>;

    async fn get_dataset_files(
        &self,
        req: Request<DatasetRef>,
    ) -> Result<Response<Self::GetDatasetFilesStream>, Status> {
        let who = caller(&req)?;
        let d = Arc::new(self.0.dataset(&who, &req.into_inner().name).await?);
        let catalog = self.0.clone();
        Ok(Response::new(lfn_stream(move |after| {
            let (catalog, d, who) = (catalog.clone(), d.clone(), who.clone());
            async move { catalog.dataset_page(&who, &d, after, PAGE).await }
        })))
    }

    async fn add_ancestors(
        &self,
        req: Request<AddAncestorsRequest>,
    ) -> Result<Response<PathResult>, Status> {
        let who = caller(&req)?;
        let links: Vec<(String, Vec<String>)> = req
            .into_inner()
            .links
            .into_iter()
            .map(|l| (l.lfn, l.ancestors))
            .collect();
        let out = self.0.add_ancestors(&who, &links).await?;
        Ok(Response::new(path_result(out)))
    }

    async fn get_lineage(
        &self,
        req: Request<LineageRequest>,
    ) -> Result<Response<LineageResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let (found, failed) = self
            .0
            .lineage(&who, &r.lfns, r.depth, r.descendants)
            .await?;
        Ok(Response::new(LineageResponse {
            lineage: found
                .into_iter()
                .map(|(k, list)| {
                    (
                        k,
                        Lineage {
                            related: list
                                .into_iter()
                                .map(|(lfn, depth)| Related { lfn, depth })
                                .collect(),
                        },
                    )
                })
                .collect(),
            failed: failed_map(failed),
        }))
    }
}
