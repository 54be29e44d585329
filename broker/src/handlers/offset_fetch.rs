//! OffsetFetch: one group (v1-7) or several (v8+); -1 where nothing was committed.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{sb, tn};
use crate::broker::Broker;
use crate::group::offsets_log::CommittedOffset;

/// A topic's partitions with their committed offsets (None: nothing committed).
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// (topic, [(partition, committed)]) for the asked partitions, or every committed one.
fn lookup(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    let committed = broker.groups.fetch_offsets(group);
    match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(name, parts)| {
                let t = name.0.as_str().to_string();
                let ps = parts
                    .into_iter()
                    .map(|p| (p, committed.get(&(t.clone(), p)).cloned()))
                    .collect();
                (t, ps)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                BTreeMap::new();
            for ((t, p), o) in committed {
                by_topic.entry(t).or_default().push((p, Some(o)));
            }
            by_topic.into_iter().collect()
        }
    }
}

/// Answers OffsetFetch.
pub fn handle(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    // KIP-447: with require_stable, a partition whose offset sits in an open transaction
    // answers UNSTABLE_OFFSET_COMMIT (the client retries).
    let require_stable = req.require_stable;
    let single_group = req.group_id.0.as_str().to_string();
    let mut resp = answer(broker, req, version);
    if require_stable {
        for g in resp.groups.iter_mut() {
            let gid = g.group_id.0.as_str().to_string();
            for t in g.topics.iter_mut() {
                for p in t.partitions.iter_mut() {
                    if broker
                        .groups
                        .has_pending_offset(&gid, t.name.0.as_str(), p.partition_index)
                    {
                        p.error_code = UNSTABLE_OFFSET_COMMIT;
                        p.committed_offset = -1;
                    }
                }
            }
        }
        for t in resp.topics.iter_mut() {
            for p in t.partitions.iter_mut() {
                if broker.groups.has_pending_offset(
                    &single_group,
                    t.name.0.as_str(),
                    p.partition_index,
                ) {
                    p.error_code = UNSTABLE_OFFSET_COMMIT;
                    p.committed_offset = -1;
                }
            }
        }
    }
    resp
}

const UNSTABLE_OFFSET_COMMIT: i16 = 88;

fn answer(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let found = lookup(broker, g.group_id.0.as_str(), topics);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(
                        found
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(tn(&t))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(
                                                        o.as_ref().map_or(-1, |o| o.offset),
                                                    )
                                                    .with_committed_leader_epoch(
                                                        o.as_ref().map_or(-1, |o| o.leader_epoch),
                                                    )
                                                    .with_metadata(Some(sb(o
                                                        .as_ref()
                                                        .map_or("", |o| o.metadata.as_str()))))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let found = lookup(broker, req.group_id.0.as_str(), topics);
    OffsetFetchResponse::default().with_topics(
        found
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default()
                    .with_name(tn(&t))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, o)| {
                                let mut r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.as_ref().map_or(-1, |o| o.offset))
                                    .with_metadata(Some(sb(o
                                        .as_ref()
                                        .map_or("", |o| o.metadata.as_str()))));
                                if version >= 5 {
                                    r = r.with_committed_leader_epoch(
                                        o.as_ref().map_or(-1, |o| o.leader_epoch),
                                    );
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
