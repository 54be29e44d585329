//! `runnel groups`: list, describe, delete and reset-offsets, as kafka-consumer-groups.sh.
#![allow(clippy::print_literal)] // headers go through the same width specs as the rows below them

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use runnel_api::{Admin, ClientError, TopicPartition};

use crate::tools::Bootstrap;

/// `runnel groups ...`
#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// List group ids.
    List,
    /// Offsets and lag per partition (or members, or state).
    Describe {
        /// Group id.
        #[arg(long)]
        group: String,
        /// Show members instead of offsets.
        #[arg(long)]
        members: bool,
        /// Show the group's state instead of offsets.
        #[arg(long)]
        state: bool,
    },
    /// Delete a group with no active members (and its offsets).
    Delete {
        /// Group id.
        #[arg(long)]
        group: String,
    },
    /// Move a group's committed offsets (dry run unless --execute).
    ResetOffsets(ResetArgs),
}

/// Arguments of `reset-offsets`.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Group id.
    #[arg(long)]
    group: String,
    /// Topic, optionally with partitions: `orders` or `orders:0,2`.
    #[arg(long)]
    topic: Option<String>,
    /// Every topic the group has offsets for.
    #[arg(long = "all-topics")]
    all_topics: bool,
    /// To the log start.
    #[arg(long = "to-earliest")]
    to_earliest: bool,
    /// To the log end.
    #[arg(long = "to-latest")]
    to_latest: bool,
    /// To this offset.
    #[arg(long = "to-offset")]
    to_offset: Option<i64>,
    /// To the first offset at or after this time (YYYY-MM-DDTHH:mm:SS[.sss][Z|±HH:MM]).
    #[arg(long = "to-datetime")]
    to_datetime: Option<String>,
    /// Move by this many offsets (negative: back).
    #[arg(long = "shift-by", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// To the offset of this long ago (ISO-8601 duration, e.g. PT1H30M, P1DT2H).
    #[arg(long = "by-duration")]
    by_duration: Option<String>,
    /// Only show the result (the default).
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Apply the change.
    #[arg(long)]
    execute: bool,
}

pub(crate) fn reach(e: ClientError, b: &Bootstrap) -> anyhow::Error {
    match e {
        ClientError::Io(_) | ClientError::Disconnected | ClientError::Timeout(_) => {
            anyhow::anyhow!("cannot reach a broker at {}: {e}", b.bootstrap_server)
        }
        other => anyhow::anyhow!(other),
    }
}

/// Parses `YYYY-MM-DDTHH:mm:SS[.sss][Z|±HH:MM]` (UTC when no zone) to epoch ms.
pub fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let bad =
        || anyhow::anyhow!("bad datetime '{s}': expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+HH:MM]");
    let (main, zone_ms) = if let Some(m) = s.strip_suffix('Z') {
        (m, 0)
    } else if s.len() > 6
        && matches!(&s[s.len() - 6..s.len() - 5], "+" | "-")
        && s.as_bytes()[s.len() - 3] == b':'
    {
        let z = &s[s.len() - 6..];
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let h: i64 = z[1..3].parse().map_err(|_| bad())?;
        let m: i64 = z[4..6].parse().map_err(|_| bad())?;
        (&s[..s.len() - 6], sign * (h * 3600 + m * 60) * 1000)
    } else {
        (s, 0)
    };
    let (date, time) = main.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + ms) - zone_ms)
}

/// Parses an ISO-8601 duration `PnDTnHnMn[.n]S` to ms.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("bad duration '{s}': expected e.g. PT1H30M or P1DT2H");
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (days_part, time_part) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> anyhow::Result<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| *u == c).ok_or_else(bad)?;
                total += num.parse::<f64>().map_err(|_| bad())? * unit.1;
                num.clear();
            }
        }
        if num.is_empty() { Ok(()) } else { Err(bad()) }
    };
    take(days_part, &[('D', 86_400_000.0)])?;
    take(
        time_part,
        &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)],
    )?;
    Ok(total as i64)
}

/// Runs `runnel groups`.
pub async fn groups(b: &Bootstrap, cmd: GroupsCmd) -> anyhow::Result<()> {
    let admin = Admin::connect(&b.bootstrap_server)
        .await
        .map_err(|e| reach(e, b))?;
    match cmd {
        GroupsCmd::List => {
            // As kafka-consumer-groups.sh: consumer groups (and groups with only offsets),
            // not Connect workers or other protocol types.
            for g in admin.list_groups().await? {
                if g.protocol_type.is_empty() || g.protocol_type == "consumer" {
                    println!("{}", g.group_id);
                }
            }
        }
        GroupsCmd::Delete { group } => {
            admin
                .delete_groups(std::slice::from_ref(&group))
                .await
                .map_err(|e| match e {
                    ClientError::Broker { code: 68, .. } => {
                        anyhow::anyhow!("group '{group}' is not empty: stop its members first")
                    }
                    ClientError::Broker { code: 69, .. } => {
                        anyhow::anyhow!("group '{group}' does not exist")
                    }
                    e => anyhow::anyhow!(e),
                })?;
            println!("Deletion of requested consumer groups ('{group}') was successful.");
        }
        GroupsCmd::Describe {
            group,
            members,
            state,
        } => {
            let d = admin.describe_group(&group).await.map_err(|e| match e {
                ClientError::Broker { code: 69, .. } => {
                    anyhow::anyhow!("consumer group '{group}' does not exist")
                }
                e => anyhow::anyhow!(e),
            })?;
            if state {
                println!(
                    "{:<20} {:<25} {:<20} {:<20} {}",
                    "GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"
                );
                let coord = admin
                    .describe_cluster()
                    .await?
                    .brokers
                    .into_iter()
                    .next()
                    .map(|b| format!("{} ({})", b.addr, b.id))
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<25} {:<20} {:<20} {}",
                    group,
                    coord,
                    d.protocol,
                    d.state,
                    d.members.len()
                );
                return Ok(());
            }
            if d.members.is_empty() {
                println!("\nConsumer group '{group}' has no active members.\n");
            }
            if members {
                println!(
                    "{:<20} {:<50} {:<16} {:<20} {}",
                    "GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"
                );
                for m in &d.members {
                    println!(
                        "{:<20} {:<50} {:<16} {:<20} {}",
                        group,
                        m.member_id,
                        m.host,
                        m.client_id,
                        m.assignment.len()
                    );
                }
                return Ok(());
            }
            let committed = admin.list_group_offsets(&group).await?;
            let mut owners: BTreeMap<TopicPartition, &runnel_api::GroupMember> = BTreeMap::new();
            for m in &d.members {
                for tp in &m.assignment {
                    owners.insert(tp.clone(), m);
                }
            }
            let tps: BTreeSet<TopicPartition> =
                committed.keys().chain(owners.keys()).cloned().collect();
            let query: Vec<(TopicPartition, i64)> = tps.iter().map(|tp| (tp.clone(), -1)).collect();
            let ends: BTreeMap<TopicPartition, i64> = admin
                .list_offsets(&query)
                .await?
                .into_iter()
                .map(|(tp, o, _)| (tp, o))
                .collect();
            println!(
                "{:<20} {:<20} {:<10} {:<15} {:<15} {:<8} {:<50} {:<16} {}",
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID"
            );
            for tp in tps {
                let cur = committed.get(&tp).copied();
                let end = ends.get(&tp).copied();
                let lag = match (cur, end) {
                    (Some(c), Some(e)) => (e - c).max(0).to_string(),
                    _ => "-".into(),
                };
                let (cid, host, client) = match owners.get(&tp) {
                    Some(m) => (m.member_id.as_str(), m.host.as_str(), m.client_id.as_str()),
                    None => ("-", "-", "-"),
                };
                println!(
                    "{:<20} {:<20} {:<10} {:<15} {:<15} {:<8} {:<50} {:<16} {}",
                    group,
                    tp.topic,
                    tp.partition,
                    cur.map_or("-".into(), |c| c.to_string()),
                    end.map_or("-".into(), |e| e.to_string()),
                    lag,
                    cid,
                    host,
                    client
                );
            }
        }
        GroupsCmd::ResetOffsets(a) => reset(&admin, a).await?,
    }
    Ok(())
}

async fn reset(admin: &Admin, a: ResetArgs) -> anyhow::Result<()> {
    let specs = [
        a.to_earliest,
        a.to_latest,
        a.to_offset.is_some(),
        a.to_datetime.is_some(),
        a.shift_by.is_some(),
        a.by_duration.is_some(),
    ];
    if specs.iter().filter(|x| **x).count() != 1 {
        bail!(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by, --by-duration"
        );
    }
    if a.execute && a.dry_run {
        bail!("--dry-run and --execute cannot be used together");
    }
    if let Ok(d) = admin.describe_group(&a.group).await
        && !d.members.is_empty()
    {
        bail!(
            "Assignments can only be reset if the group '{}' is inactive, but the current state is {}.",
            a.group,
            d.state
        );
    }
    let committed = admin.list_group_offsets(&a.group).await.unwrap_or_default();
    let tps: Vec<TopicPartition> = match (&a.topic, a.all_topics) {
        (Some(t), false) => match t.split_once(':') {
            Some((topic, parts)) => parts
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map(|p| TopicPartition::new(topic, p))
                        .with_context(|| format!("bad partition in '{t}'"))
                })
                .collect::<anyhow::Result<_>>()?,
            None => {
                let info = admin
                    .describe_topics(std::slice::from_ref(t))
                    .await
                    .map_err(|_| anyhow::anyhow!("topic '{t}' does not exist"))?;
                info[0]
                    .partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.as_str(), p.partition))
                    .collect()
            }
        },
        (None, true) => committed.keys().cloned().collect(),
        _ => bail!("give --topic or --all-topics"),
    };
    let q = |ts: i64| tps.iter().map(|tp| (tp.clone(), ts)).collect::<Vec<_>>();
    let earliest: BTreeMap<_, _> = admin
        .list_offsets(&q(-2))
        .await?
        .into_iter()
        .map(|(tp, o, _)| (tp, o))
        .collect();
    let latest: BTreeMap<_, _> = admin
        .list_offsets(&q(-1))
        .await?
        .into_iter()
        .map(|(tp, o, _)| (tp, o))
        .collect();
    let by_time = |ts: i64| async move {
        let found = admin.list_offsets(&q(ts)).await?;
        Ok::<_, ClientError>(
            found
                .into_iter()
                .map(|(tp, o, _)| (tp, o))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let now = crate::tools::now_ms_since_epoch();
    let target_time = match (&a.to_datetime, &a.by_duration) {
        (Some(dt), _) => Some(parse_datetime(dt)?),
        (_, Some(d)) => Some(now - parse_duration(d)?),
        _ => None,
    };
    let at_time = match target_time {
        Some(ts) => Some(by_time(ts).await?),
        None => None,
    };
    let mut new = BTreeMap::new();
    for tp in &tps {
        let (lo, hi) = (earliest[tp], latest[tp]);
        let want = if a.to_earliest {
            lo
        } else if a.to_latest {
            hi
        } else if let Some(o) = a.to_offset {
            o
        } else if let Some(s) = a.shift_by {
            committed.get(tp).copied().unwrap_or(lo) + s
        } else {
            // No record at or after the time: the end of the log.
            at_time
                .as_ref()
                .and_then(|m| m.get(tp).copied())
                .filter(|o| *o >= 0)
                .unwrap_or(hi)
        };
        new.insert(tp.clone(), want.clamp(lo, hi));
    }
    println!(
        "\n{:<20} {:<20} {:<10} {}",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for (tp, o) in &new {
        println!(
            "{:<20} {:<20} {:<10} {}",
            a.group, tp.topic, tp.partition, o
        );
    }
    if a.execute {
        admin.commit_group_offsets(&a.group, &new).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_and_durations_parse_like_kafka_accepts_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z").unwrap(),
            1_709_210_096_789
        );
        assert_eq!(
            parse_datetime("2024-02-29T14:34:56.789+02:00").unwrap(),
            1_709_210_096_789
        );
        assert!(parse_datetime("yesterday").is_err());
        assert_eq!(parse_duration("PT1H30M").unwrap(), 5_400_000);
        assert_eq!(parse_duration("P1DT0.5S").unwrap(), 86_400_500);
        assert!(parse_duration("1h").is_err());
    }
}
