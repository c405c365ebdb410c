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

/// Index partitions of a cluster created without `SPOOL_PARTITIONS` (`design.md`, "Operator
/// interface"): a catalog and 32 index partitions, shared by the nodes.
pub const PARTITIONS_DEFAULT: u16 = 32;

/// The cluster's recorded number of index partitions, if any.
async fn recorded_partitions(t: &tokio_postgres::Transaction<'_>) -> Result<Option<u16>, Error> {
    let known: Option<i64> = t
        .query_opt("SELECT value FROM spool_meta WHERE key = 'partitions'", &[])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    known.map(|n| u16::try_from(n).map_err(|_| Error::Invalid(format!("spool_meta.partitions = {n}")))).transpose()
}

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

    /// The cluster's number of index partitions, fixed when it is created (`SPOOL_PARTITIONS`):
    /// 0 is a cluster of one partition (0) that holds everything; N > 0 has a catalog
    /// (partition 0) and index partitions 1..=N (`engine-spec/cluster.md`, "Partitions").
    /// The first node to start on an empty log records `requested` (default [`PARTITIONS_DEFAULT`]) and creates the
    /// partitions' rows; later nodes read it (a different `requested` is ignored, with the
    /// recorded value answered). A log that already has events and no recorded shape is a
    /// cluster of one partition.
    pub async fn partitions(&self, requested: Option<u16>) -> Result<u16, Error> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(connect(&self.url).await?);
        }
        let c = slot.as_mut().ok_or(Error::Closed)?;
        let t = c.transaction().await.map_err(pg_err)?;
        if let Some(n) = recorded_partitions(&t).await? {
            return Ok(n);
        }
        // Looked at again under the lock: another node may have recorded it meanwhile.
        t.batch_execute("SELECT pg_advisory_xact_lock(7370657)").await.map_err(pg_err)?;
        if let Some(n) = recorded_partitions(&t).await? {
            return Ok(n);
        }
        let used: Option<i64> = t
            .query_opt("SELECT head FROM spool_partitions WHERE partition = 0", &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        let n = if used.is_some_and(|h| h > 0) { 0 } else { requested.unwrap_or(PARTITIONS_DEFAULT) };
        t.execute("INSERT INTO spool_meta (key, value) VALUES ('partitions', $1)", &[&i64::from(n)])
            .await
            .map_err(pg_err)?;
        t.execute(
            "INSERT INTO spool_partitions (partition, epoch, head) \
             SELECT p, 0, 0 FROM generate_series(0, $1::int) AS p ON CONFLICT DO NOTHING",
            &[&i32::from(n)],
        )
        .await
        .map_err(pg_err)?;
        t.commit().await.map_err(pg_err)?;
        Ok(n)
    }

    /// Every partition's holder (`None`: free or never held), by partition.
    pub async fn holders(&self) -> Result<Vec<(i32, Option<Holder>)>, Error> {
        let rows = self
            .with_client(async |c| {
                c.query(
                    "SELECT p.partition, p.lease_owner, n.advertise_url, \
                     (extract(epoch FROM (p.lease_expires - now())) * 1000)::bigint \
                     FROM spool_partitions p LEFT JOIN spool_nodes n ON n.node_id = p.lease_owner \
                     ORDER BY p.partition",
                    &[],
                )
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let owner: Option<String> = r.get(1);
                (
                    r.get(0),
                    owner.map(|node_id| Holder {
                        node_id,
                        advertise_url: r.get(2),
                        lease_expires_in_ms: r.get::<_, Option<i64>>(3).unwrap_or(i64::MIN),
                    }),
                )
            })
            .collect())
    }

    /// Nodes seen within `within` (the live ones), on the database's clock.
    pub async fn live_nodes(&self, within: std::time::Duration) -> Result<Vec<String>, Error> {
        let rows = self
            .with_client(async |c| {
                c.query(
                    "SELECT node_id FROM spool_nodes WHERE seen > now() - make_interval(secs => $1) ORDER BY node_id",
                    &[&within.as_secs_f64()],
                )
                .await
            })
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
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

    /// Say this node is leaving (SIGTERM): it no longer counts among the live nodes that share
    /// the partitions, so the others take its partitions as it hands them back. Its address
    /// stays, for the requests forwarded to it while it drains.
    pub async fn leave(&self, node_id: &str) -> Result<(), Error> {
        self.with_client(async |c| {
            c.execute("UPDATE spool_nodes SET seen = now() - interval '1 day' WHERE node_id = $1", &[&node_id]).await
        })
        .await
        .map(|_| ())
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
