//! DescribeLogDirs: the broker's log directory, the size of each partition in it, and
//! (v4) the file system's total and usable bytes, as `kafka-log-dirs` and admin UIs show.

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::sb;
use crate::broker::Broker;

/// Answers DescribeLogDirs. `topics` null asks for every partition; partitions asked for
/// that this broker does not host are left out, as Kafka does.
pub fn handle(broker: &Broker, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => broker
            .topics()
            .iter()
            .map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect()))
            .collect(),
    };
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for (name, partitions) in wanted {
        let found: Vec<DescribeLogDirsPartition> = partitions
            .iter()
            .filter_map(|i| broker.partition(&name, *i))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(p.log().size_bytes() as i64)
                    .with_offset_lag(0)
                    .with_is_future_key(false)
            })
            .collect();
        if found.is_empty() {
            continue;
        }
        match topics.iter_mut().find(|t| t.name.0.as_str() == name) {
            Some(t) => t.partitions.extend(found),
            None => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(sb(&name)))
                    .with_partitions(found),
            ),
        }
    }
    let dir = broker.config.log_dir();
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    // Kafka answers -1 when the file store cannot tell.
    let (total, usable) = nix::sys::statvfs::statvfs(&dir)
        .map(|s| {
            let frag = s.fragment_size() as i64;
            (
                (s.blocks() as i64).saturating_mul(frag),
                (s.blocks_available() as i64).saturating_mul(frag),
            )
        })
        .unwrap_or((-1, -1));
    DescribeLogDirsResponse::default().with_results(vec![
        DescribeLogDirsResult::default()
            .with_log_dir(sb(&dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(total)
            .with_usable_bytes(usable),
    ])
}
