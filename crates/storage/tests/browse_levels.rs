//! A one-level browse of a bucket uses delimiter listings, never the recursive listing of the
//! whole subtree (which on a big bucket lists everything to keep a few). Checked on an
//! in-memory store that counts the calls made to it.

use futures::StreamExt;
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

    // A recursive browse still lists everything under the prefix: 505 objects end within the
    // flat listing's first page (here at once, before the folder's listing beside it is
    // made), so that listing is all.
    let all = browse(&store, &req("videos/", true)).await.unwrap();
    assert_eq!(all.len(), 505);
    assert_eq!(counting.recursive_lists.load(Ordering::SeqCst), 1);
    assert_eq!(counting.delimited_lists.load(Ordering::SeqCst), 3);
    // Walking the folders instead (what a store whose flat pages are slow gets): videos/,
    // 2024/, deep/, archive/ and its ten, never the flat listing.
    let walked = spool_storage::walk_folders(&store, &req("videos/", true), None).await.unwrap();
    assert_eq!(walked.len(), 505);
    assert_eq!(counting.recursive_lists.load(Ordering::SeqCst), 1);
    assert_eq!(counting.delimited_lists.load(Ordering::SeqCst), 3 + 14);
}

/// The choice between paging on and walking: the flat listing's first page is waited for four
/// times as long as the prefix's folder took to list (s3s-fs: a folder in 3 ms, a page in 260:
/// walk; moto: both about 380 ms: page on).
#[test]
fn a_browse_walks_only_when_the_first_flat_page_is_much_slower_than_a_folder() {
    use std::time::Duration;
    assert!(spool_storage::page_deadline(Duration::from_millis(3)) < Duration::from_millis(260));
    assert!(spool_storage::page_deadline(Duration::from_millis(370)) > Duration::from_millis(380));
}

/// The walk of a bucket's folders (side by side) finds what the flat listing finds: the same
/// objects under prefixes that end in a folder, inside a name, or at the root, with and without
/// a pattern; and it stops past the limit with TooMany (regression of the browse that listed a
/// bucket's pages one after another: 0.2 × rclone's walk on s3s-fs).
#[tokio::test]
async fn a_recursive_browse_walks_the_folders_and_finds_what_the_flat_listing_finds() {
    let counting = Arc::new(Counting::default());
    let mut keys =
        vec!["top.mp4".to_string(), "videos/a.mp4".into(), "videos/2024x.mp4".into(), "videos/2024/c.mov".into()];
    // More than a flat page (1,000): the browse lists one page, then chooses.
    for i in 0..1300 {
        keys.push(format!("videos/p{}/q{}/f{i}.{}", i % 7, i % 3, if i % 2 == 0 { "mp4" } else { "txt" }));
    }
    for k in &keys {
        counting.put(&Path::from(k.as_str()), PutPayload::from_static(b"x")).await.unwrap();
    }
    let store = Store { inner: counting.clone(), multipart: None, local_root: None };
    for prefix in ["", "/", "videos", "videos/", "videos/2024", "videos/p3", "videos/p3/q1/", "nothing/"] {
        for pattern in ["", "*.mp4", "**/q1/*", "*.{mp4,mov}"] {
            let r =
                BrowseRequest { prefix: prefix.into(), pattern: pattern.into(), recursive: true, max_entries: 10_000 };
            let mut walked: Vec<String> = spool_storage::walk_folders(&store, &r, None)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
            walked.sort();
            let browsed: Vec<String> = browse(&store, &r).await.unwrap().into_iter().map(|f| f.path).collect();
            let mut flat: Vec<String> =
                spool_storage::matching(&store, &r).unwrap().map(|m| m.unwrap().location.to_string()).collect().await;
            flat.sort();
            assert_eq!(walked, flat, "prefix {prefix:?} pattern {pattern:?}");
            assert_eq!(browsed, flat, "prefix {prefix:?} pattern {pattern:?}");
        }
    }
    let r = BrowseRequest { prefix: "videos/".into(), pattern: String::new(), recursive: true, max_entries: 100 };
    assert!(matches!(browse(&store, &r).await, Err(spool_storage::BrowseError::TooMany { max: 100 })));
    assert!(matches!(
        spool_storage::walk_folders(&store, &r, None).await,
        Err(spool_storage::BrowseError::TooMany { max: 100 })
    ));
}
