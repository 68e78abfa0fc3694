//! The `s3` plugin: an S3 bucket (AWS, Ceph RGW, MinIO, any S3-compatible
//! store) through the `object_store` crate, path-style, with the server's
//! credentials. Large files go up in multipart uploads streamed from disk;
//! an upload that fails is aborted, so no partial object is left.

use std::path::Path;

use futures::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Adler32, Stat, StorageError, StoragePlugin, check_lfn};

/// Files up to this size go up in one PUT.
const SINGLE_PUT: u64 = 8 << 20;
/// Part size of multipart uploads.
const PART: usize = 16 << 20;

pub struct S3Plugin {
    store: AmazonS3,
    bucket: String,
    /// Key prefix inside the bucket, without slashes at either end.
    prefix: String,
    endpoint: String,
}

impl S3Plugin {
    /// `path` is `bucket` or `bucket/prefix`.
    pub fn new(
        endpoint: Option<&str>,
        region: Option<&str>,
        path: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self, StorageError> {
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(StorageError::Invalid(
                "an s3 storage element needs Path: <bucket>[/prefix]".into(),
            ));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region.unwrap_or("us-east-1"))
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key);
        let endpoint = endpoint
            .unwrap_or("https://s3.amazonaws.com")
            .trim_end_matches('/')
            .to_string();
        // Client options first: they would reset allow_http.
        builder = builder
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(10))
                    .with_timeout(std::time::Duration::from_secs(600)),
            )
            .with_endpoint(&endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            // A dead endpoint fails in seconds, not after minutes of retries.
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                backoff: object_store::BackoffConfig::default(),
            });
        let store = builder
            .build()
            .map_err(|e| StorageError::Invalid(format!("s3 storage element {bucket}: {e}")))?;
        Ok(S3Plugin {
            store,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
        })
    }

    fn key(&self, lfn: &str) -> Result<object_store::path::Path, StorageError> {
        check_lfn(lfn)?;
        let key = if self.prefix.is_empty() {
            lfn.trim_start_matches('/').to_string()
        } else {
            format!("{}/{}", self.prefix, lfn.trim_start_matches('/'))
        };
        object_store::path::Path::parse(&key)
            .map_err(|e| StorageError::Invalid(format!("'{lfn}' cannot be an S3 key: {e}")))
    }

    fn error(&self, lfn: &str, e: object_store::Error) -> StorageError {
        let url = self.url(lfn);
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound(url),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StorageError::PermissionDenied(url),
            other => {
                // The causes say what actually went wrong (connection refused …).
                let mut text = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    let c = cause.to_string();
                    if !text.contains(&c) {
                        text.push_str(": ");
                        text.push_str(&c);
                    }
                    source = cause.source();
                }
                StorageError::Unavailable(format!("{url}: {text}"))
            }
        }
    }
}

#[async_trait::async_trait]
impl StoragePlugin for S3Plugin {
    fn protocol(&self) -> &'static str {
        "s3"
    }

    fn url(&self, lfn: &str) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!(
            "s3://{}/{}{prefix}{lfn}",
            self.endpoint.split("://").nth(1).unwrap_or(&self.endpoint),
            self.bucket
        )
    }

    async fn put(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let key = self.key(lfn)?;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?
            .len();
        let mut sum = Adler32::new();
        let local_err =
            |e: std::io::Error| StorageError::Invalid(format!("{}: {e}", local.display()));
        if len <= SINGLE_PUT {
            let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut data).await.map_err(local_err)?;
            sum.update(&data);
            let size = data.len() as u64;
            self.store
                .put(&key, PutPayload::from(data))
                .await
                .map_err(|e| self.error(lfn, e))?;
            return Ok(Stat {
                size,
                adler32: Some(sum.hex()),
            });
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| self.error(lfn, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let streamed: Result<(), StorageError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(local_err)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| self.error(lfn, e))?;
                sum.update(&buf[..n]);
                size += n as u64;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = streamed {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(|e| self.error(lfn, e))?;
        Ok(Stat {
            size,
            adler32: Some(sum.hex()),
        })
    }

    async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let key = self.key(lfn)?;
        let result = self.store.get(&key).await.map_err(|e| self.error(lfn, e))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        let mut sum = Adler32::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(lfn, e))?;
            sum.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        }
        out.flush()
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        Ok(Stat {
            size,
            adler32: Some(sum.hex()),
        })
    }

    async fn remove(&self, lfn: &str) -> Result<(), StorageError> {
        let key = self.key(lfn)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(lfn, e)),
        }
    }

    async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError> {
        let key = self.key(lfn)?;
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(Stat {
                size: meta.size,
                adler32: None,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(lfn, e)),
        }
    }
}
