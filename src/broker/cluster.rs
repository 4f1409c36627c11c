//! Startup of a cluster node: which metadata the shards start from, the metadata quorum
//! on shard 0 (with the hooks through which it installs states and serves forwarded
//! controller requests), and the import of a standalone node's topics when that node
//! becomes the first node of a cluster.
//!
//! A standalone data dir holds a `cluster-metadata` that no quorum wrote
//! (`cluster_member == false`). A cluster node must not install it as the cluster's
//! state (the quorum's state would later drop those topics and their data), so it starts
//! from an empty state, keeps the standalone metadata in `cluster-import-pending` (made
//! durable before anything else), and asks the controller to bring those topics in,
//! assigned to this node and keeping their ids and configs, until it has.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::cluster::{ClusterView, MetadataQuorum, QuorumHooks};
use crate::config::ServeConfig;
use crate::metadata::{BrokerRegistration, ClusterMetadata};
use crate::shard::mesh::ControllerRequest;
use crate::shard::{controller, controller_forward, ShardContext};
use crate::storage::disk::{read_small_file, remove_file, write_file_atomic, StorageEnv};
use crate::storage::partition_identity::{read_claim, write_claim, DirectoryClaim};

/// A standalone node's metadata waiting to be imported into the cluster.
const IMPORT_PENDING_FILE: &str = "cluster-import-pending";
const IMPORT_RETRY: Duration = Duration::from_secs(2);

/// The metadata a shard starts from. `shard` 0 also saves a standalone state for import.
pub async fn initial_metadata(config: &ServeConfig, shard: usize) -> Result<ClusterMetadata, String> {
    let loaded = ClusterMetadata::load(&config.data_dir).await.map_err(|e| e.to_string())?;
    match (&config.cluster, loaded.cluster_member) {
        (None, false) | (Some(_), true) => Ok(loaded),
        (None, true) => Err(format!(
            "data dir {} belongs to a cluster node: start it with --node-id, --cluster-listen and --peers",
            config.data_dir.display()
        )),
        (Some(_), false) => {
            if shard == 0 && !loaded.topics.is_empty() {
                // Written every time the node starts from a standalone state (a pending
                // file from an earlier attempt may be older than the standalone state).
                let path = config.data_dir.join(IMPORT_PENDING_FILE);
                write_file_atomic(&path, &loaded.encode(), &StorageEnv::default())
                    .await
                    .map_err(|e| format!("cannot save the standalone metadata for import: {e}"))?;
                // Claim the partition directories for their standalone topic ids, so a
                // cluster topic of the same name never opens them as its own.
                for (name, topic) in &loaded.topics {
                    for partition in 0..topic.partitions {
                        let dir = config.data_dir.join(format!("{name}-{partition}"));
                        if dir.is_dir() && read_claim(&dir) == DirectoryClaim::Unclaimed {
                            write_claim(&dir, topic.id).map_err(|e| format!("cannot claim {}: {e}", dir.display()))?;
                        }
                    }
                }
                tracing::info!(
                    topics = loaded.topics.len(),
                    "standalone data dir joins a cluster: its topics will be imported"
                );
            }
            Ok(ClusterMetadata { next_producer_id: 1000, ..ClusterMetadata::default() })
        }
    }
}

/// Starts the metadata quorum on shard 0.
pub fn start_quorum(ctx: &Rc<ShardContext>, view: Arc<ClusterView>) -> Result<(), String> {
    let config = &ctx.config;
    let cluster = config.cluster.clone().expect("cluster mode");
    let listener = super::bind_shard_listener(cluster.cluster_listen, config.defer_accept_secs)
        .map_err(|e| format!("cannot listen on --cluster-listen {}: {e}", cluster.cluster_listen))?;
    let registration = BrokerRegistration {
        node_id: cluster.node_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        rack: cluster.rack.clone(),
        fenced: false,
    };
    let publish = {
        let ctx = ctx.clone();
        Rc::new(move |metadata: Arc<ClusterMetadata>| {
            let ctx = ctx.clone();
            Box::pin(async move { controller::publish(&ctx, metadata).await }) as _
        })
    };
    let forwarded = {
        let ctx = ctx.clone();
        Rc::new(move |body: Vec<u8>| {
            let ctx = ctx.clone();
            Box::pin(async move {
                match crate::shard::txn_forward::txn_call_body(&body) {
                    Some(call) => crate::shard::transactions::serve_forwarded(ctx, call).await,
                    None => controller_forward::execute_forwarded(ctx, body).await,
                }
            }) as _
        })
    };
    let partition_frames = {
        let ctx = ctx.clone();
        Rc::new(move |from: i32, frame| ctx.deliver_partition_frame(from, frame))
    };
    let quorum = MetadataQuorum::start(
        cluster.clone(),
        registration,
        config.data_dir.clone(),
        (*ctx.metadata()).clone(),
        view,
        QuorumHooks { publish, forwarded, partition_frames },
        listener,
    )?;
    tracing::info!(node_id = cluster.node_id, cluster_listen = %cluster.cluster_listen, "cluster node started");
    ctx.set_quorum(quorum);
    glommio::spawn_local(import_standalone_topics(ctx.clone())).detach();
    Ok(())
}

/// Imports the topics of `cluster-import-pending`, retrying until the controller took
/// them, then removes the file.
async fn import_standalone_topics(ctx: Rc<ShardContext>) {
    let path = ctx.config.data_dir.join(IMPORT_PENDING_FILE);
    let standalone = match read_small_file(&path, &StorageEnv::default()).await {
        Ok(Some(bytes)) => match ClusterMetadata::decode(&bytes) {
            Ok(standalone) => standalone,
            Err(reason) => return tracing::error!(path = %path.display(), %reason, "cannot import: file damaged"),
        },
        Ok(None) => return,
        Err(error) => return tracing::error!(path = %path.display(), %error, "cannot read the topics to import"),
    };
    let topics: Vec<_> = standalone.topics.into_iter().collect();
    loop {
        let (reply, answer) = oneshot::channel();
        let request = ControllerRequest::ImportTopics {
            node_id: ctx.config.node_id,
            topics: topics.clone(),
            next_producer_id: standalone.next_producer_id,
            reply,
        };
        controller::execute(&ctx, request).await;
        let replies = answer.await.unwrap_or_default();
        let refused: Vec<_> = replies.iter().filter(|r| r.error_code != 0).collect();
        if !replies.is_empty() && refused.is_empty() {
            tracing::info!(topics = topics.len(), "standalone topics imported into the cluster");
            if let Err(error) = remove_file(&path, &StorageEnv::default()).await {
                tracing::warn!(%error, "could not remove {}", path.display());
            }
            return;
        }
        if let Some(clash) = refused.iter().find(|r| r.error_code == 36) {
            // TOPIC_ALREADY_EXISTS with another id: keep the data, say so, stop trying.
            return tracing::error!(
                reason = clash.message.as_deref().unwrap_or(""),
                "some standalone topics clash with cluster topics; their data is kept unserved in {} \
                 (directories named <topic>-<partition>, or <topic>-<partition>.orphan-<id> once the cluster \
                 topic placed a partition here)",
                Path::new(&ctx.config.data_dir).display()
            );
        }
        glommio::timer::sleep(IMPORT_RETRY).await;
    }
}
