//! `runnel transactions`: list, describe and describe-producers, as kafka-transactions.sh.

use anyhow::bail;
use clap::Subcommand;
use runnel_api::{Admin, ClientError};

use crate::groups::reach;
use crate::tools::Bootstrap;

/// `runnel transactions ...`
#[derive(Subcommand, Debug)]
pub enum TransactionsCmd {
    /// Transactional ids with their producer id and state.
    List {
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
        /// CompleteAbort, PrepareEpochFence); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only transactions open for longer than this many ms.
        #[arg(long = "duration-filter")]
        duration_filter: Option<i64>,
    },
    /// State, producer, timeout and partitions of one transactional id.
    Describe {
        /// The transactional id.
        #[arg(long = "transactional-id")]
        transactional_id: String,
    },
    /// Active producers of a partition (sequence, epoch, open transaction).
    DescribeProducers {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
    },
}

/// Prints rows as columns padded to their widest cell (as kafka-transactions.sh).
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("\t").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn or_none(v: i64) -> String {
    if v < 0 { "None".into() } else { v.to_string() }
}

/// Runs `runnel transactions`.
pub async fn transactions(b: &Bootstrap, cmd: TransactionsCmd) -> anyhow::Result<()> {
    let admin = Admin::connect(&b.bootstrap_server)
        .await
        .map_err(|e| reach(e, b))?;
    match cmd {
        TransactionsCmd::List {
            states,
            duration_filter,
        } => {
            let rows = admin
                .list_transactions(&states, duration_filter)
                .await?
                .into_iter()
                .map(|t| {
                    vec![
                        t.transactional_id,
                        t.coordinator.to_string(),
                        t.producer_id.to_string(),
                        t.state,
                    ]
                })
                .collect();
            table(
                &[
                    "TransactionalId",
                    "Coordinator",
                    "ProducerId",
                    "TransactionState",
                ],
                rows,
            );
        }
        TransactionsCmd::Describe { transactional_id } => {
            let t = match admin.describe_transaction(&transactional_id).await {
                Err(ClientError::Broker { code: 105, .. }) => {
                    bail!("transactional id '{transactional_id}' does not exist")
                }
                other => other?,
            };
            let now = crate::tools::now_ms_since_epoch();
            let parts: Vec<String> = t
                .partitions
                .iter()
                .map(|(t, p)| format!("{t}-{p}"))
                .collect();
            table(
                &[
                    "CoordinatorId",
                    "TransactionalId",
                    "ProducerId",
                    "ProducerEpoch",
                    "TransactionState",
                    "TransactionTimeoutMs",
                    "CurrentTransactionStartTimeMs",
                    "TransactionDurationMs",
                    "TopicPartitions",
                ],
                vec![vec![
                    t.coordinator.to_string(),
                    t.transactional_id,
                    t.producer_id.to_string(),
                    t.producer_epoch.to_string(),
                    t.state,
                    t.timeout_ms.to_string(),
                    or_none(t.start_time_ms),
                    if t.start_time_ms < 0 {
                        "None".into()
                    } else {
                        (now - t.start_time_ms).max(0).to_string()
                    },
                    parts.join(","),
                ]],
            );
        }
        TransactionsCmd::DescribeProducers { topic, partition } => {
            let rows = admin
                .describe_producers(&topic, partition)
                .await?
                .into_iter()
                .map(|p| {
                    vec![
                        p.producer_id.to_string(),
                        p.producer_epoch.to_string(),
                        p.coordinator_epoch.to_string(),
                        p.last_sequence.to_string(),
                        p.last_timestamp.to_string(),
                        or_none(p.current_txn_start_offset),
                    ]
                })
                .collect();
            table(
                &[
                    "ProducerId",
                    "ProducerEpoch",
                    "LatestCoordinatorEpoch",
                    "LastSequence",
                    "LastTimestamp",
                    "CurrentTransactionStartOffset",
                ],
                rows,
            );
        }
    }
    Ok(())
}
