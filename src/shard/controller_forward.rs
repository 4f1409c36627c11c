//! Controller requests that reach a cluster node which does not lead the metadata quorum
//! travel to the leader (Kafka's request forwarding, KIP-590) and its answer comes back
//! the same way. A request becomes a serializable `ControllerCall`, the answer a
//! `ControllerAnswer` (JSON on the inter-broker transport).

use std::rc::Rc;

use futures_channel::oneshot;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

use crate::cluster::{MetadataQuorum, QuorumError};
use crate::metadata::topic_config::ConfigChange;
use crate::metadata::TopicMetadata;

use super::controller::{execute_here, quorum_refusal};
use super::mesh::{ConfigResource, ControllerReply, ControllerRequest, NewTopic, PartitionReassignment};
use super::ShardContext;

/// How long a forwarding node waits to install the controller's new state before it
/// answers anyway.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
enum ControllerCall {
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    DeleteTopics { names: Vec<String> },
    AlterConfigs { resource: ConfigResource, changes: Vec<ConfigChange>, incremental: bool, validate_only: bool },
    CreatePartitions { topic: String, count: i32, validate_only: bool },
    AllocateProducerId,
    AllocateProducerIdBlock,
    ImportTopics { node_id: i32, topics: Vec<(String, TopicMetadata)>, next_producer_id: i64 },
    Reassign { changes: Vec<PartitionReassignment> },
    CompleteReassignment { topic: String, partition: i32, target: crate::metadata::ReassignmentTarget },
}

/// The controller's answer and the metadata-log index its state had then: the node
/// that forwarded the request answers its client only once it has installed that state
/// too (a client that created a topic through it can use it there at once).
#[derive(Debug, Serialize, Deserialize)]
struct ForwardedAnswer {
    applied_index: u64,
    answer: ControllerAnswer,
}

#[derive(Debug, Serialize, Deserialize)]
enum ControllerAnswer {
    Replies(Vec<ControllerReply>),
    Codes(Vec<i16>),
    Reply(ControllerReply),
    ProducerId(Result<i64, i16>),
    ProducerIdBlock(Result<i64, ControllerReply>),
    /// The leader could not read the call (a different version).
    Unreadable(String),
}

/// Where the answer to a call goes.
enum AnswerTo {
    Replies(oneshot::Sender<Vec<ControllerReply>>, usize),
    Codes(oneshot::Sender<Vec<i16>>, usize),
    Reply(oneshot::Sender<ControllerReply>),
    ProducerId(oneshot::Sender<Result<i64, i16>>),
    ProducerIdBlock(oneshot::Sender<Result<i64, ControllerReply>>),
}

fn split(request: ControllerRequest) -> (ControllerCall, AnswerTo) {
    match request {
        ControllerRequest::CreateTopics { topics, validate_only, reply } => {
            let count = topics.len();
            (ControllerCall::CreateTopics { topics, validate_only }, AnswerTo::Replies(reply, count))
        }
        ControllerRequest::DeleteTopics { names, reply } => {
            let count = names.len();
            (ControllerCall::DeleteTopics { names }, AnswerTo::Codes(reply, count))
        }
        ControllerRequest::AlterConfigs { resource, changes, incremental, validate_only, reply } => {
            (ControllerCall::AlterConfigs { resource, changes, incremental, validate_only }, AnswerTo::Reply(reply))
        }
        ControllerRequest::CreatePartitions { topic, count, validate_only, reply } => {
            (ControllerCall::CreatePartitions { topic, count, validate_only }, AnswerTo::Reply(reply))
        }
        ControllerRequest::AllocateProducerId { reply } => {
            (ControllerCall::AllocateProducerId, AnswerTo::ProducerId(reply))
        }
        ControllerRequest::AllocateProducerIdBlock { reply } => {
            (ControllerCall::AllocateProducerIdBlock, AnswerTo::ProducerIdBlock(reply))
        }
        ControllerRequest::ImportTopics { node_id, topics, next_producer_id, reply } => {
            let count = topics.len();
            (ControllerCall::ImportTopics { node_id, topics, next_producer_id }, AnswerTo::Replies(reply, count))
        }
        ControllerRequest::Reassign { changes, reply } => {
            let count = changes.len();
            (ControllerCall::Reassign { changes }, AnswerTo::Replies(reply, count))
        }
        ControllerRequest::CompleteReassignment { topic, partition, target, reply } => {
            (ControllerCall::CompleteReassignment { topic, partition, target }, AnswerTo::Reply(reply))
        }
    }
}

impl AnswerTo {
    fn answer(self, answer: ControllerAnswer) {
        let failed = |reason: String| ControllerReply::error(ResponseError::UnknownServerError.code(), reason);
        match (self, answer) {
            (AnswerTo::Replies(reply, _), ControllerAnswer::Replies(replies)) => drop(reply.send(replies)),
            (AnswerTo::Codes(reply, _), ControllerAnswer::Codes(codes)) => drop(reply.send(codes)),
            (AnswerTo::Reply(reply), ControllerAnswer::Reply(answer)) => drop(reply.send(answer)),
            (AnswerTo::ProducerId(reply), ControllerAnswer::ProducerId(id)) => drop(reply.send(id)),
            (AnswerTo::ProducerIdBlock(reply), ControllerAnswer::ProducerIdBlock(block)) => drop(reply.send(block)),
            (to, ControllerAnswer::Unreadable(reason)) => to.fail(&failed(reason)),
            (to, other) => to.fail(&failed(format!("the controller answered with {other:?}"))),
        }
    }

    fn fail(self, refused: &ControllerReply) {
        match self {
            AnswerTo::Replies(reply, count) => drop(reply.send(vec![refused.clone(); count])),
            AnswerTo::Codes(reply, count) => drop(reply.send(vec![refused.error_code; count])),
            AnswerTo::Reply(reply) => drop(reply.send(refused.clone())),
            AnswerTo::ProducerId(reply) => drop(reply.send(Err(refused.error_code))),
            AnswerTo::ProducerIdBlock(reply) => drop(reply.send(Err(refused.clone()))),
        }
    }
}

/// Sends `request` to the controller `leader` and delivers its answer.
pub async fn forward(quorum: &MetadataQuorum, leader: i32, request: ControllerRequest) {
    let (call, answer_to) = split(request);
    let body = serde_json::to_vec(&call).expect("controller calls encode");
    match quorum.forward(leader, body).await {
        Ok(bytes) => match serde_json::from_slice::<ForwardedAnswer>(&bytes) {
            Ok(ForwardedAnswer { applied_index, answer }) => {
                quorum.wait_published(applied_index, PUBLISH_WAIT).await;
                answer_to.answer(answer)
            }
            Err(error) => answer_to.fail(&ControllerReply::error(
                ResponseError::UnknownServerError.code(),
                format!("the controller's answer does not decode: {error}"),
            )),
        },
        Err(error) => answer_to.fail(&quorum_refusal(&error)),
    }
}

/// Answers `request` with `error` (no controller to send it to).
pub fn refuse(request: ControllerRequest, error: &QuorumError) {
    split(request).1.fail(&quorum_refusal(error));
}

/// The leader's side: executes a forwarded call and encodes the answer.
pub async fn execute_forwarded(ctx: Rc<ShardContext>, body: Vec<u8>) -> Vec<u8> {
    let answer = match serde_json::from_slice::<ControllerCall>(&body) {
        Ok(call) => run(&ctx, call).await,
        Err(error) => ControllerAnswer::Unreadable(format!("the controller cannot read the request: {error}")),
    };
    let applied_index = ctx.quorum().map_or(0, |quorum| quorum.applied_index());
    serde_json::to_vec(&ForwardedAnswer { applied_index, answer }).expect("controller answers encode")
}

async fn run(ctx: &Rc<ShardContext>, call: ControllerCall) -> ControllerAnswer {
    macro_rules! ask {
        ($variant:ident, $make:expr) => {{
            let (reply, answer) = oneshot::channel();
            execute_here(ctx, $make(reply)).await;
            match answer.await {
                Ok(value) => ControllerAnswer::$variant(value),
                Err(_) => ControllerAnswer::Unreadable("the controller dropped the request".into()),
            }
        }};
    }
    match call {
        ControllerCall::CreateTopics { topics, validate_only } => {
            ask!(Replies, |reply| ControllerRequest::CreateTopics { topics, validate_only, reply })
        }
        ControllerCall::DeleteTopics { names } => ask!(Codes, |reply| ControllerRequest::DeleteTopics { names, reply }),
        ControllerCall::AlterConfigs { resource, changes, incremental, validate_only } => {
            ask!(Reply, |reply| ControllerRequest::AlterConfigs {
                resource,
                changes,
                incremental,
                validate_only,
                reply
            })
        }
        ControllerCall::CreatePartitions { topic, count, validate_only } => {
            ask!(Reply, |reply| ControllerRequest::CreatePartitions { topic, count, validate_only, reply })
        }
        ControllerCall::AllocateProducerId => ask!(ProducerId, |reply| ControllerRequest::AllocateProducerId { reply }),
        ControllerCall::AllocateProducerIdBlock => {
            ask!(ProducerIdBlock, |reply| ControllerRequest::AllocateProducerIdBlock { reply })
        }
        ControllerCall::ImportTopics { node_id, topics, next_producer_id } => {
            ask!(Replies, |reply| ControllerRequest::ImportTopics { node_id, topics, next_producer_id, reply })
        }
        ControllerCall::Reassign { changes } => ask!(Replies, |reply| ControllerRequest::Reassign { changes, reply }),
        ControllerCall::CompleteReassignment { topic, partition, target } => {
            ask!(Reply, |reply| ControllerRequest::CompleteReassignment { topic, partition, target, reply })
        }
    }
}
