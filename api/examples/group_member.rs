//! A consumer-group member for the interop suite: subscribes (range assignor), commits
//! each record before printing it, and prints JSON lines: `{"assigned": [...]}` after each
//! rebalance and `{"record": [partition, offset, value]}` per record. Runs until killed.
//!
//! `cargo run -p runnel-api --example group_member -- BOOTSTRAP GROUP TOPIC`

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_api::{Consumer, ConsumerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: group_member BOOTSTRAP GROUP TOPIC".into());
    }
    let mut cfg = ConsumerConfig::new(&args[1]);
    cfg.set("group.id", &args[2])?
        .set("auto.offset.reset", "earliest")?
        .set("enable.auto.commit", "false")?
        .set("session.timeout.ms", "6000")?
        .set("heartbeat.interval.ms", "500")?
        .set("partition.assignment.strategy", "range")?;
    let mut consumer = Consumer::connect(cfg).await?;
    consumer.subscribe(&[args[3].as_str()])?;
    let mut last_assignment: Vec<i32> = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        let mut now: Vec<i32> = consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect();
        now.sort_unstable();
        if now != last_assignment {
            println!("{{\"assigned\": {now:?}}}");
            last_assignment = now;
        }
        for r in records {
            let tp = r.topic_partition();
            consumer
                .commit_sync(Some(BTreeMap::from([(tp, r.offset + 1)])))
                .await?;
            let value =
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            println!(
                "{{\"record\": [{}, {}, \"{}\"]}}",
                r.partition,
                r.offset,
                value.replace('"', "\\\"")
            );
        }
    }
}
