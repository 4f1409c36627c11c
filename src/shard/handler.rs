//! Executes a `ShardRequest` on the shard it was sent to: the per-partition and per-shard
//! work of the Kafka APIs (closures built by each API's handler, see `ShardTask`),
//! controller requests (shard 0), consumer-group requests (the group's coordinating
//! shard) and metadata snapshots.

use std::rc::Rc;

use super::context::ShardContext;
use super::controller;
use super::mesh::ShardRequest;

pub async fn execute(ctx: Rc<ShardContext>, request: ShardRequest) {
    match request {
        ShardRequest::Run(task) => (task.0)(ctx).await,
        ShardRequest::Controller(request) => {
            assert_eq!(ctx.id, 0, "controller requests go to shard 0");
            controller::execute(&ctx, request).await;
        }
        ShardRequest::Group(request) => ctx.groups.execute(request).await,
        ShardRequest::ApplyMetadata { metadata, reply } => {
            ctx.apply_metadata(metadata).await;
            let _ = reply.send(());
        }
    }
}
