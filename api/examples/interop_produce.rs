//! Produces a deterministic record set and prints where each record landed, one JSON
//! object per line. The interop suite has other clients read it back.
//!
//! `cargo run -p runnel-api --example interop_produce -- BOOTSTRAP TOPIC COUNT CODEC BASE_TS`

use runnel_api::{Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        return Err("usage: interop_produce BOOTSTRAP TOPIC COUNT CODEC BASE_TS".into());
    }
    let (bootstrap, topic) = (&args[1], &args[2]);
    let count: usize = args[3].parse()?;
    let base_ts: i64 = args[5].parse()?;
    let mut cfg = ProducerConfig::new(bootstrap);
    cfg.set("compression.type", &args[4])?
        .set("linger.ms", "10")?;
    let producer = Producer::connect(cfg).await?;
    let mut deliveries = Vec::new();
    for i in 0..count {
        let mut r = ProducerRecord::new(topic.as_str()).timestamp(base_ts + i as i64);
        if i % 5 != 4 {
            r = r.key(format!("key-{}", i % 13));
        }
        if i % 7 != 6 {
            r = r.value(format!("value-{i}"));
        }
        r = r
            .header("idx", i.to_string())
            .header("dup", "a")
            .header("dup", "b");
        deliveries.push(producer.send(r).await?);
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        let m = d.await?;
        println!(
            "{{\"i\":{i},\"partition\":{},\"offset\":{},\"timestamp\":{}}}",
            m.partition, m.offset, m.timestamp
        );
    }
    producer.close().await?;
    Ok(())
}
