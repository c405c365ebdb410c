//! A one-level browse of a bucket uses delimiter listings, never the recursive listing of the
//! whole subtree (which on a big bucket lists everything to keep a few). Checked on an
//! in-memory store that counts the calls made to it.

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use spool_storage::{BrowseRequest, Store, browse};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    recursive_lists: AtomicUsize,
    delimited_lists: AtomicUsize,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counting")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.recursive_lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.delimited_lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn req(prefix: &str, recursive: bool) -> BrowseRequest {
    BrowseRequest { prefix: prefix.into(), pattern: "*.mp4".into(), recursive, max_entries: 10_000 }
}

#[tokio::test]
async fn one_level_browse_lists_with_a_delimiter_not_the_whole_subtree() {
    let counting = Arc::new(Counting::default());
    for k in ["videos/a.mp4", "videos/b.mp4", "videos/2024/c.mp4", "videos/2024/deep/d.mp4", "videos/2024x.mp4"] {
        counting.put(&Path::from(k), PutPayload::from_static(b"x")).await.unwrap();
    }
    for i in 0..500 {
        counting
            .put(&Path::from(format!("videos/archive/d{}/f{i}.mp4", i % 10)), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    let store = Store { inner: counting.clone(), multipart: None, local_root: None };
    let paths = |v: Vec<spool_storage::CloudFile>| v.into_iter().map(|f| f.path).collect::<Vec<_>>();

    let top = paths(browse(&store, &req("videos/", false)).await.unwrap());
    assert_eq!(top, ["videos/2024x.mp4", "videos/a.mp4", "videos/b.mp4"]);
    // A prefix that ends inside a name covers that folder's first level too (as before).
    let partial = paths(browse(&store, &req("videos/2024", false)).await.unwrap());
    assert_eq!(partial, ["videos/2024/c.mp4", "videos/2024x.mp4"]);
    assert_eq!(counting.recursive_lists.load(Ordering::SeqCst), 0, "a one-level browse listed the subtree");
    assert_eq!(counting.delimited_lists.load(Ordering::SeqCst), 3);

    // A recursive browse still lists everything under the prefix.
    let all = browse(&store, &req("videos/", true)).await.unwrap();
    assert_eq!(all.len(), 505);
    assert_eq!(counting.recursive_lists.load(Ordering::SeqCst), 1);
}
