//! `tern consume --group`: the console consumer as a full member of a consumer group. It
//! joins with the `range` and `roundrobin` assignors (so it shares a group with Java and
//! librdkafka consumers), reads only its assigned partitions of the topic from the
//! group's committed offsets (`--from` where none is committed), heartbeats between
//! fetches, commits its printed positions every `--commit-interval-ms`, and on a
//! rebalance commits what it printed, then rejoins. On exit it commits and leaves the
//! group, so the others take over its partitions at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::consume::{missing_topic, start_positions, stop_requested, ConsumeArgs, Output, Start};
use super::group::committed_offsets;
use super::partition_reader::{PartitionReader, READ_RETRY_LIMIT};
use crate::client::group_member::{GroupMember, MemberTimeouts, Membership};
use crate::client::{Client, ClientError};

/// How long a member with nothing assigned waits between heartbeat checks.
const IDLE_POLL: Duration = Duration::from_millis(100);
const SETUP_RETRY_BACKOFF: Duration = Duration::from_millis(500);

pub async fn consume(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    start: &Start,
    out: &mut Output<'_>,
) -> Result<(), ClientError> {
    if client.partitions(&args.topic).await?.is_none() {
        return Err(missing_topic(&args.topic));
    }
    let timeouts = MemberTimeouts::with_session_timeout(args.session_timeout_ms);
    let mut member = GroupMember::new(client, group, vec![args.topic.clone()], timeouts);
    let result = consume_as_member(client, args, start, out, &mut member).await;
    // Leave on every way out, so the group rebalances now rather than after our session.
    let left = member.leave().await;
    result.and(left)
}

async fn consume_as_member(
    client: &Client,
    args: &ConsumeArgs,
    start: &Start,
    out: &mut Output<'_>,
    member: &mut GroupMember<'_>,
) -> Result<(), ClientError> {
    let commit_interval = Duration::from_millis(args.commit_interval_ms);
    let mut setup_failing_since: Option<Instant> = None;
    'generation: loop {
        if stop_requested() {
            return Ok(());
        }
        let assigned: Vec<i32> =
            member.join().await?.into_iter().filter(|(topic, _)| *topic == args.topic).map(|(_, p)| p).collect();
        eprintln!(
            "joined group {} as {} (generation {}): partitions {:?} of {}",
            args.group.as_deref().unwrap_or_default(),
            member.member_id(),
            member.generation(),
            assigned,
            args.topic
        );
        let (mut reader, mut committed, ends) = match start_reading(client, args, start, &assigned).await {
            Ok(setup) => {
                setup_failing_since = None;
                setup
            }
            Err(error) if error.is_transport() => {
                // A broker is down (restarting?): rejoin once it is back, within limits.
                let since = *setup_failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > READ_RETRY_LIMIT {
                    return Err(error);
                }
                eprintln!("retrying after: {error}");
                glommio::timer::sleep(SETUP_RETRY_BACKOFF).await;
                continue 'generation;
            }
            Err(error) => return Err(error),
        };
        let mut last_commit = Instant::now();

        loop {
            let finished = stop_requested() || out.done() || (args.exit_at_end && reader.at_end(&ends));
            if finished {
                // A commit refused because a rebalance is completing is lost with the
                // membership; what was printed since the last commit may be read again.
                commit(member, &args.topic, reader.positions(), &mut committed).await?;
                return Ok(());
            }
            if member.heartbeat_if_due().await? == Membership::Rejoin {
                // Eager protocol: give up the partitions with their positions committed.
                commit(member, &args.topic, reader.positions(), &mut committed).await?;
                continue 'generation;
            }
            if last_commit.elapsed() >= commit_interval {
                last_commit = Instant::now();
                if commit(member, &args.topic, reader.positions(), &mut committed).await? == Membership::Rejoin {
                    continue 'generation;
                }
            }
            if reader.is_empty() {
                glommio::timer::sleep(IDLE_POLL).await;
                continue;
            }
            reader.poll(client, out).await?;
        }
    }
}

/// For a new assignment: the reader of the assigned partitions, positioned at the
/// group's committed offsets (else `--from`); what the group has committed; the end
/// offsets for `--exit-at-end`.
async fn start_reading(
    client: &Client,
    args: &ConsumeArgs,
    start: &Start,
    assigned: &[i32],
) -> Result<(PartitionReader, BTreeMap<i32, i64>, HashMap<i32, i64>), ClientError> {
    let leaders = client.partitions(&args.topic).await?.ok_or_else(|| missing_topic(&args.topic))?;
    let partitions: Vec<_> = leaders.into_iter().filter(|p| assigned.contains(&p.partition)).collect();
    let mut positions = start_positions(client, &args.topic, &partitions, start).await?;
    let group = args.group.as_deref().unwrap_or_default();
    // Only what the group has committed counts as committed: a position that comes from
    // --from is committed at the next commit even if nothing is read, so a member taking
    // the partition over later starts where this one started.
    let mut committed = BTreeMap::new();
    for ((topic, partition), offset) in committed_offsets(client, group).await? {
        if topic == args.topic && positions.contains_key(&partition) {
            positions.insert(partition, offset);
            committed.insert(partition, offset);
        }
    }
    let ends = client.list_offsets(&args.topic, &partitions, -1).await?;
    Ok((PartitionReader::new(&args.topic, partitions, positions, start.reset_to()), committed, ends))
}

/// Commits the positions that moved since the last commit.
async fn commit(
    member: &mut GroupMember<'_>,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
    committed: &mut BTreeMap<i32, i64>,
) -> Result<Membership, ClientError> {
    let moved: Vec<(i32, i64)> =
        positions.iter().filter(|(p, o)| committed.get(p) != Some(o)).map(|(&p, &o)| (p, o)).collect();
    let membership = member.commit(topic, &moved).await?;
    if membership == Membership::Current {
        committed.extend(moved);
    }
    Ok(membership)
}
