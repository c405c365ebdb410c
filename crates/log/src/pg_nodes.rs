//! The nodes of a cluster on a PostgreSQL log (`spool_nodes`): where each node is reached, and
//! which node holds each partition. A node that does not hold a partition forwards the requests
//! of that partition to its holder (`spool serve`, `engine-spec/cluster.md`).
//!
//! Nothing here is fenced or decides anything: a stale answer sends a request to a node that no
//! longer holds the partition, which refuses to forward it again (one hop) and the client retries.

use crate::Error;
use crate::pg_log::{connect, create_schema, pg_err};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// A node as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    /// Where other nodes reach it (`SPOOL_ADVERTISE_URL`).
    pub advertise_url: String,
    /// Milliseconds since it last said it was alive, on the database's clock.
    pub seen_ms_ago: i64,
}

/// A partition's holder, with the address it advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node_id: String,
    pub advertise_url: Option<String>,
    /// Milliseconds until its lease expires (negative: expired), on the database's clock.
    pub lease_expires_in_ms: i64,
}

/// One connection to the cluster's database, reopened after a failure.
pub struct Directory {
    url: String,
    client: Mutex<Option<Client>>,
}

impl Directory {
    /// Connect, creating the log's tables when missing.
    pub async fn open(url: &str) -> Result<Directory, Error> {
        let mut c = connect(url).await?;
        let t = c.transaction().await.map_err(pg_err)?;
        create_schema(&t).await?;
        t.commit().await.map_err(pg_err)?;
        Ok(Directory { url: url.to_string(), client: Mutex::new(Some(c)) })
    }

    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Error> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(connect(&self.url).await?);
        }
        let c = slot.as_ref().ok_or(Error::Closed)?;
        match f(c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if c.is_closed() {
                    *slot = None;
                }
                Err(pg_err(e))
            }
        }
    }

    /// Say where this node is reached, and that it is alive (called again as a heartbeat).
    pub async fn register(&self, node_id: &str, advertise_url: &str) -> Result<(), Error> {
        self.with_client(async |c| {
            c.execute(
                "INSERT INTO spool_nodes (node_id, advertise_url, seen) VALUES ($1, $2, now()) \
                 ON CONFLICT (node_id) DO UPDATE SET advertise_url = EXCLUDED.advertise_url, seen = now()",
                &[&node_id, &advertise_url],
            )
            .await
        })
        .await
        .map(|_| ())
    }

    /// The holder of a partition's lease, if any node holds it (an expired lease is reported
    /// with a negative time left: its holder may be gone).
    pub async fn holder(&self, partition: i32) -> Result<Option<Holder>, Error> {
        let row = self
            .with_client(async |c| {
                c.query_opt(
                    "SELECT p.lease_owner, n.advertise_url, \
                     (extract(epoch FROM (p.lease_expires - now())) * 1000)::bigint \
                     FROM spool_partitions p LEFT JOIN spool_nodes n ON n.node_id = p.lease_owner \
                     WHERE p.partition = $1 AND p.lease_owner IS NOT NULL",
                    &[&partition],
                )
                .await
            })
            .await?;
        Ok(row.map(|r| Holder {
            node_id: r.get(0),
            advertise_url: r.get(1),
            lease_expires_in_ms: r.get::<_, Option<i64>>(2).unwrap_or(i64::MIN),
        }))
    }

    /// Every node that ever registered, the most recently seen first.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, Error> {
        let rows = self
            .with_client(async |c| {
                c.query(
                    "SELECT node_id, advertise_url, (extract(epoch FROM (now() - seen)) * 1000)::bigint \
                     FROM spool_nodes ORDER BY seen DESC, node_id",
                    &[],
                )
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| NodeStatus { node_id: r.get(0), advertise_url: r.get(1), seen_ms_ago: r.get(2) })
            .collect())
    }
}
