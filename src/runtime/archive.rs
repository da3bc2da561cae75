//! Image archives from S3 (porter's payload path): downloaded to the state directory, checked
//! against their sha256 by the starting step, loaded into Docker, then deleted.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

pub struct ArchiveFetcher {
    dir: PathBuf,
    region: Option<String>,
    s3: OnceCell<aws_sdk_s3::Client>,
}

/// `s3://bucket/key` → (bucket, key).
pub fn parse_s3_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

impl ArchiveFetcher {
    pub fn new(dir: &Path, region: Option<String>) -> ArchiveFetcher {
        ArchiveFetcher {
            dir: dir.to_owned(),
            region,
            s3: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let conf =
                    crate::sdk::config(self.region.as_deref(), crate::sdk::Deadlines::DOWNLOAD)
                        .await;
                let conf = aws_sdk_s3::config::Builder::from(&conf)
                    .force_path_style(true)
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .await
    }

    /// Downloads the object to a file of its own and returns the file's path.
    pub async fn fetch(&self, url: &str, name: &str) -> Result<PathBuf, String> {
        let (bucket, key) =
            parse_s3_url(url).ok_or_else(|| format!("{url:?} is not s3://BUCKET/KEY"))?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{name}.tar"));
        let mut object = self
            .client()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "downloading {url}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        while let Some(chunk) = object
            .body
            .try_next()
            .await
            .map_err(|e| format!("downloading {url}: {e}"))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(parse_s3_url("s3://b/k/x.tar"), Some(("b", "k/x.tar")));
        assert_eq!(parse_s3_url("s3://b/"), None);
        assert_eq!(parse_s3_url("/tmp/x.tar"), None);
    }
}
