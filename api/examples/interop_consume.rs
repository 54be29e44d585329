//! Reads COUNT records from every partition of a topic and prints each as a JSON object
//! (keys, values and header values in hex; null as null).
//!
//! `cargo run -p runnel-api --example interop_consume -- BOOTSTRAP TOPIC COUNT`

use std::time::{Duration, Instant};

use runnel_api::{Admin, Consumer, ConsumerConfig, TopicPartition};

fn hex(b: &Option<bytes::Bytes>) -> String {
    match b {
        None => "null".into(),
        Some(b) => format!(
            "\"{}\"",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: interop_consume BOOTSTRAP TOPIC COUNT".into());
    }
    let (bootstrap, topic) = (&args[1], &args[2]);
    let count: usize = args[3].parse()?;
    let admin = Admin::connect(bootstrap).await?;
    let partitions = admin.describe_topics(std::slice::from_ref(topic)).await?[0]
        .partitions
        .len() as i32;
    let mut cfg = ConsumerConfig::new(bootstrap);
    cfg.set("auto.offset.reset", "earliest")?;
    let mut consumer = Consumer::connect(cfg).await?;
    consumer
        .assign(
            (0..partitions)
                .map(|p| TopicPartition::new(topic.as_str(), p))
                .collect(),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < count && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let headers: Vec<String> = r
                .headers
                .iter()
                .map(|h| format!("[\"{}\",{}]", h.key.replace('"', "\\\""), hex(&h.value)))
                .collect();
            println!(
                "{{\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":[{}]}}",
                r.partition,
                r.offset,
                r.timestamp,
                hex(&r.key),
                hex(&r.value),
                headers.join(",")
            );
            seen += 1;
        }
    }
    if seen < count {
        return Err(format!("read {seen} of {count} records").into());
    }
    Ok(())
}
