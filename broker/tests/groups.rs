//! The group coordinator with a real broker: offsets persistence and retention.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use runnel_broker::broker::now_ms;
use runnel_broker::group::coordinator::Committer;
use runnel_broker::group::offsets_log::CommittedOffset;
use runnel_broker::{Broker, BrokerConfig};

fn open(dir: &std::path::Path) -> std::sync::Arc<Broker> {
    let pairs = vec![
        ("log.dirs".to_string(), dir.display().to_string()),
        ("offsets.retention.minutes".to_string(), "1".to_string()),
    ];
    Broker::open(BrokerConfig::from_pairs(&pairs).unwrap()).unwrap()
}

fn committed(offset: i64, at: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: "m".into(),
        commit_timestamp: at,
    }
}

#[tokio::test]
async fn offsets_of_empty_groups_expire_after_offsets_retention_and_stay_expired_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker
        .create_topic("t", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let simple = Committer {
        member_id: String::new(),
        generation: -1,
    };
    let now = now_ms();
    let codes = broker
        .groups
        .commit(
            &broker,
            "old",
            &simple,
            vec![
                (("t".into(), 0), committed(5, now)),
                (("t".into(), 1), committed(7, now)),
            ],
        )
        .await;
    assert_eq!(codes, vec![0, 0]);
    broker
        .groups
        .commit(
            &broker,
            "fresh",
            &simple,
            vec![(("t".into(), 0), committed(3, now + 50_000))],
        )
        .await;
    // 30 s later nothing is due; 61 s later "old" has expired, "fresh" (committed later) not.
    broker.groups.tick_at(&broker, now + 30_000).await;
    assert_eq!(broker.groups.fetch_offsets("old").len(), 2);
    broker.groups.tick_at(&broker, now + 61_000).await;
    assert!(
        broker.groups.fetch_offsets("old").is_empty(),
        "expired after offsets.retention.minutes=1"
    );
    assert_eq!(broker.groups.fetch_offsets("fresh").len(), 1);
    broker.shutdown().unwrap();
    drop(broker);
    // The expiry was written to __consumer_offsets as tombstones: a restart agrees.
    let again = open(dir.path());
    assert!(again.groups.fetch_offsets("old").is_empty());
    assert_eq!(
        again.groups.fetch_offsets("fresh")[&("t".to_string(), 0)].offset,
        3
    );
}
