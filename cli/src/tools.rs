//! Client-side commands: topics, produce, consume, perf.

use std::io::{BufRead, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use runnel_api::{
    Admin, AlterOp, ClientError, Consumer, ConsumerConfig, Header, NewTopic, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};

/// Where the cluster is.
#[derive(Args, Debug, Clone)]
pub struct Bootstrap {
    /// Broker(s) to bootstrap from, host:port[,host:port].
    #[arg(
        long = "bootstrap-server",
        env = "RUNNEL_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
}

fn reach(e: ClientError, bootstrap: &str) -> anyhow::Error {
    match e {
        ClientError::Io(_) | ClientError::Disconnected | ClientError::Timeout(_) => {
            anyhow::anyhow!("cannot reach a broker at {bootstrap}: {e}")
        }
        other => anyhow::anyhow!(other),
    }
}

fn kv(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("expected key=value, got '{s}'"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Kafka prints topic ids as URL-safe base64 without padding.
fn topic_id(id: &uuid::Uuid) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = id.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, x)| n | (*x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `runnel topics ...`
#[derive(Subcommand, Debug)]
pub enum TopicsCmd {
    /// Create a topic.
    Create {
        /// Topic name.
        #[arg(long)]
        topic: String,
        /// Partitions (broker default if absent).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (broker default if absent).
        #[arg(long = "replication-factor")]
        replication_factor: Option<i16>,
        /// Topic config, key=value (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
        /// Succeed if the topic already exists.
        #[arg(long = "if-not-exists")]
        if_not_exists: bool,
    },
    /// List topic names.
    List,
    /// Partitions, leaders, replicas, ISR and configs.
    Describe {
        /// Topic (all topics if absent).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Add partitions or change configs.
    Alter {
        /// Topic name.
        #[arg(long)]
        topic: String,
        /// New partition count.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a config, key=value (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
        /// Remove a config override (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        #[arg(long)]
        topic: String,
    },
}

/// Runs `runnel topics`.
pub async fn topics(b: &Bootstrap, cmd: TopicsCmd) -> anyhow::Result<()> {
    let admin = Admin::connect(&b.bootstrap_server)
        .await
        .map_err(|e| reach(e, &b.bootstrap_server))?;
    match cmd {
        TopicsCmd::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let mut t = NewTopic::new(&topic, partitions.unwrap_or(-1))
                .replication_factor(replication_factor.unwrap_or(-1));
            for c in configs {
                let (k, v) = kv(&c)?;
                t = t.config(k, v);
            }
            match admin.create_topics(&[t]).await {
                Ok(()) => println!("Created topic {topic}."),
                Err(ClientError::Broker { code: 36, .. }) if if_not_exists => {}
                Err(e) => bail!(e),
            }
        }
        TopicsCmd::List => {
            for t in admin.list_topics().await? {
                println!("{t}");
            }
        }
        TopicsCmd::Describe { topic } => {
            let names = match topic {
                Some(t) => vec![t],
                None => admin.list_topics().await?,
            };
            for info in admin.describe_topics(&names).await.map_err(|e| match e {
                ClientError::UnknownTopic(t) => anyhow::anyhow!("topic '{t}' does not exist"),
                e => anyhow::anyhow!(e),
            })? {
                let overrides: Vec<String> = admin
                    .describe_topic_configs(&info.name)
                    .await?
                    .into_iter()
                    // As kafka-topics.sh --describe: everything not at its built-in default.
                    .filter(|c| c.source != 5)
                    .map(|c| format!("{}={}", c.name, c.value.unwrap_or_default()))
                    .collect();
                let rf = info
                    .partitions
                    .first()
                    .map(|p| p.replicas.len())
                    .unwrap_or(0);
                println!(
                    "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
                    info.name,
                    topic_id(&info.id),
                    info.partitions.len(),
                    rf,
                    overrides.join(",")
                );
                let join = |v: &[i32]| {
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                for p in &info.partitions {
                    println!(
                        "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                        info.name,
                        p.partition,
                        if p.leader < 0 {
                            "none".to_string()
                        } else {
                            p.leader.to_string()
                        },
                        join(&p.replicas),
                        join(&p.isr)
                    );
                }
            }
        }
        TopicsCmd::Alter {
            topic,
            partitions,
            configs,
            delete_configs,
        } => {
            if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                bail!("nothing to alter: give --partitions, --config or --delete-config");
            }
            if let Some(n) = partitions {
                admin.create_partitions(&topic, n).await?;
                println!("Topic {topic} now has {n} partitions.");
            }
            let mut ops = Vec::new();
            for c in configs {
                let (k, v) = kv(&c)?;
                ops.push(AlterOp::Set(k, v));
            }
            ops.extend(delete_configs.into_iter().map(AlterOp::Delete));
            if !ops.is_empty() {
                admin.alter_topic_configs(&topic, &ops).await?;
                println!("Updated configs of topic {topic}.");
            }
        }
        TopicsCmd::Delete { topic } => {
            admin
                .delete_topics(std::slice::from_ref(&topic))
                .await
                .map_err(|e| match e {
                    ClientError::Broker { code: 3, .. } => {
                        anyhow::anyhow!("topic '{topic}' does not exist")
                    }
                    e => anyhow::anyhow!(e),
                })?;
            println!("Deleted topic {topic}.");
        }
    }
    Ok(())
}

/// `runnel produce`: the console producer.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Split each line into key and value at this separator (no key without it).
    #[arg(long = "key-separator")]
    key_separator: Option<String>,
    /// Header added to every record, key=value (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// acks: all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long = "compression", default_value = "none")]
    compression: String,
    /// Partition (the partitioner chooses if absent).
    #[arg(long)]
    partition: Option<i32>,
    /// Producer property, key=value (repeatable).
    #[arg(long = "producer-property")]
    properties: Vec<String>,
}

/// Runs `runnel produce`.
pub async fn produce(b: &Bootstrap, a: ProduceArgs) -> anyhow::Result<()> {
    let mut cfg = ProducerConfig::new(&b.bootstrap_server);
    cfg.set("acks", &a.acks)?
        .set("compression.type", &a.compression)?;
    for p in &a.properties {
        let (k, v) = kv(p)?;
        cfg.set(&k, &v)?;
    }
    let headers: Vec<Header> = a
        .headers
        .iter()
        .map(|h| kv(h).map(|(k, v)| Header::new(k, v)))
        .collect::<Result<_, _>>()?;
    let producer = Producer::connect(cfg)
        .await
        .map_err(|e| reach(e, &b.bootstrap_server))?;
    let mut pending = Vec::new();
    let topic: std::sync::Arc<str> = a.topic.as_str().into();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut rec = ProducerRecord::new(topic.clone());
        rec.partition = a.partition;
        rec.headers = headers.clone();
        match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => {
                    rec.key = Some(Bytes::from(k.to_string()));
                    rec.value = Some(Bytes::from(v.to_string()));
                }
                None => bail!("no key separator '{sep}' in line: {line}"),
            },
            None => rec.value = Some(Bytes::from(line)),
        }
        pending.push(producer.send(rec).await?);
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                d.await?;
            }
        }
    }
    producer.flush().await?;
    for d in pending {
        d.await?;
    }
    Ok(())
}

/// `runnel consume`: the console consumer.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start from the earliest offset (default: only new records).
    #[arg(long = "from-beginning")]
    from_beginning: bool,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Start offset: a number, earliest or latest (needs --partition).
    #[arg(long)]
    offset: Option<String>,
    /// Stop after this many records.
    #[arg(long = "max-messages")]
    max_messages: Option<usize>,
    /// Stop when no record arrives for this long (ms).
    #[arg(long = "timeout-ms")]
    timeout_ms: Option<u64>,
    /// Print keys.
    #[arg(long = "print-key")]
    print_key: bool,
    /// Print headers.
    #[arg(long = "print-headers")]
    print_headers: bool,
    /// Print timestamps.
    #[arg(long = "print-timestamp")]
    print_timestamp: bool,
    /// Print partition and offset.
    #[arg(long = "print-offset")]
    print_offset: bool,
    /// Separator between printed fields.
    #[arg(long = "key-separator", default_value = "\t")]
    separator: String,
    /// read_uncommitted or read_committed.
    #[arg(long = "isolation-level", default_value = "read_uncommitted")]
    isolation_level: String,
    /// Consume as a member of this group (committing offsets) instead of reading
    /// every partition directly.
    #[arg(long)]
    group: Option<String>,
    /// Consumer property, key=value (repeatable).
    #[arg(long = "consumer-property")]
    properties: Vec<String>,
}

fn show(b: &Option<Bytes>) -> String {
    match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

/// Runs `runnel consume`.
pub async fn consume(b: &Bootstrap, a: ConsumeArgs) -> anyhow::Result<()> {
    if a.offset.is_some() && a.partition.is_none() {
        bail!("--offset needs --partition");
    }
    if a.group.is_some() && (a.partition.is_some() || a.offset.is_some()) {
        bail!("--group cannot be combined with --partition or --offset");
    }
    let mut cfg = ConsumerConfig::new(&b.bootstrap_server);
    cfg.set("isolation.level", &a.isolation_level)?;
    cfg.set(
        "auto.offset.reset",
        if a.from_beginning {
            "earliest"
        } else {
            "latest"
        },
    )?;
    if let Some(g) = &a.group {
        cfg.set("group.id", g)?;
        // What is printed is committed, exactly (see below), not the poll position.
        cfg.set("enable.auto.commit", "false")?;
    }
    for p in &a.properties {
        let (k, v) = kv(p)?;
        cfg.set(&k, &v)?;
    }
    let mut consumer = Consumer::connect(cfg)
        .await
        .map_err(|e| reach(e, &b.bootstrap_server))?;
    let admin = Admin::connect(&b.bootstrap_server).await?;
    let info = admin
        .describe_topics(std::slice::from_ref(&a.topic))
        .await
        .map_err(|_| anyhow::anyhow!("topic '{}' does not exist", a.topic))?;
    let tps: Vec<TopicPartition> = match a.partition {
        Some(p) => vec![TopicPartition::new(&a.topic, p)],
        None => info[0]
            .partitions
            .iter()
            .map(|p| TopicPartition::new(&a.topic, p.partition))
            .collect(),
    };
    match &a.group {
        Some(_) => consumer.subscribe(&[a.topic.as_str()])?,
        None => consumer.assign(tps.clone()).await?,
    }
    match a.offset.as_deref() {
        Some("earliest") => consumer.seek_to_beginning(&tps).await?,
        Some("latest") => consumer.seek_to_end(&tps).await?,
        Some(n) => consumer.seek(
            &tps[0],
            n.parse().with_context(|| format!("bad --offset '{n}'"))?,
        )?,
        None => {}
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0usize;
    let mut printed = std::collections::BTreeMap::new();
    let idle_limit = a.timeout_ms.map(Duration::from_millis);
    let mut last = Instant::now();
    loop {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        if !records.is_empty() {
            last = Instant::now();
        }
        for r in records {
            let mut fields = Vec::new();
            if a.print_timestamp {
                fields.push(format!(
                    "{}:{}",
                    if r.log_append_time {
                        "LogAppendTime"
                    } else {
                        "CreateTime"
                    },
                    r.timestamp
                ));
            }
            if a.print_offset {
                fields.push(format!("Partition:{}", r.partition));
                fields.push(format!("Offset:{}", r.offset));
            }
            if a.print_headers {
                let h: Vec<String> = r
                    .headers
                    .iter()
                    .map(|h| format!("{}:{}", h.key, show(&h.value)))
                    .collect();
                fields.push(if h.is_empty() {
                    "NO_HEADERS".into()
                } else {
                    h.join(",")
                });
            }
            if a.print_key {
                fields.push(show(&r.key));
            }
            fields.push(show(&r.value));
            writeln!(out, "{}", fields.join(&a.separator))?;
            count += 1;
            printed.insert(r.topic_partition(), r.offset + 1);
            if a.max_messages.is_some_and(|m| count >= m) {
                out.flush()?;
                // With a group, commit exactly what was printed, then leave cleanly.
                if a.group.is_some() {
                    consumer.commit_sync(Some(printed)).await?;
                }
                consumer.close().await?;
                return Ok(());
            }
        }
        out.flush()?;
        if a.group.is_some() && !printed.is_empty() {
            consumer.commit_sync(Some(printed.clone())).await?;
        }
        if idle_limit.is_some_and(|l| last.elapsed() >= l) {
            eprintln!("Processed a total of {count} messages");
            consumer.close().await?;
            return Ok(());
        }
    }
}

/// `runnel perf ...`
#[derive(Subcommand, Debug)]
pub enum PerfCmd {
    /// Producer throughput and latency (like kafka-producer-perf-test).
    Produce {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Records to send.
        #[arg(long = "num-records")]
        num_records: u64,
        /// Bytes per record value.
        #[arg(long = "record-size")]
        record_size: usize,
        /// Target records/s (-1: as fast as possible).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        throughput: i64,
        /// Producer property, key=value (repeatable).
        #[arg(long = "producer-props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Consumer throughput (like kafka-consumer-perf-test).
    Consume {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Records to read.
        #[arg(long)]
        messages: u64,
        /// Give up after this long without records (ms).
        #[arg(long = "timeout-ms", default_value_t = 10_000)]
        timeout_ms: u64,
        /// Consumer property, key=value (repeatable).
        #[arg(long = "consumer-props", num_args = 1..)]
        props: Vec<String>,
    },
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms_since_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What `runnel perf produce` learns from its delivery callbacks on one thread: the
/// count, mean and maximum of every latency, percentiles from a sample (every n-th
/// record, as kafka-producer-perf-test samples), and the current 5 s window's figures.
#[derive(Default)]
struct PerfStats {
    acked: u64,
    sum_ms: f64,
    max_ms: f64,
    samples: Vec<f64>,
    first_error: Option<runnel_api::ClientError>,
    window_count: u64,
    window_sum: f64,
    window_max: f64,
}

impl PerfStats {
    /// A record sent at `sent` was acknowledged at `now`.
    fn record(&mut self, sent: Instant, now: Instant, sampling: u64) {
        let ms = (now - sent).as_secs_f64() * 1000.0;
        if self.acked.is_multiple_of(sampling) {
            self.samples.push(ms);
        }
        self.acked += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
        self.window_count += 1;
        self.window_sum += ms;
        self.window_max = self.window_max.max(ms);
    }

    fn failed(&mut self, e: runnel_api::ClientError) {
        self.first_error.get_or_insert(e);
    }
}

/// One `runnel perf produce` run's delivery statistics, kept per thread: callbacks run
/// on whichever worker thread handles a Produce answer, and with one shared record two
/// threads took turns locking it for every record (2% of the tool's CPU time spent
/// waiting for the lock, more in moving it between the CPUs' caches).
struct PerfRun {
    id: u64,
    /// Every n-th acknowledged record of a thread is sampled for percentiles: about
    /// 500,000 samples in all.
    sampling: u64,
    shards: Mutex<Vec<std::sync::Arc<Mutex<PerfStats>>>>,
}

/// A thread's shard of a [`PerfRun`], and the batch whose callbacks the thread is
/// running: its topic name (the producer shares one per batch), partition, next offset,
/// and when the batch's first callback read the clock.
struct PerfShard {
    run: u64,
    stats: std::sync::Arc<Mutex<PerfStats>>,
    batch: Option<(std::sync::Arc<str>, i32, i64, Instant)>,
}

thread_local! {
    static PERF_SHARD: std::cell::RefCell<Option<PerfShard>> =
        const { std::cell::RefCell::new(None) };
}

impl PerfRun {
    fn new(records: u64) -> Self {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        PerfRun {
            id: RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sampling: (records / 500_000).max(1),
            shards: Mutex::new(Vec::new()),
        }
    }

    /// A delivery callback: the record sent at `sent` has its outcome `r`.
    fn delivered(
        &self,
        sent: Instant,
        r: Result<runnel_api::RecordMetadata, runnel_api::ClientError>,
    ) {
        PERF_SHARD.with(|cell| {
            let mut cell = cell.borrow_mut();
            let shard = match &mut *cell {
                Some(shard) if shard.run == self.id => shard,
                // This thread's first callback of the run.
                slot => {
                    let stats = std::sync::Arc::new(Mutex::new(PerfStats::default()));
                    lock(&self.shards).push(stats.clone());
                    slot.insert(PerfShard {
                        run: self.id,
                        stats,
                        batch: None,
                    })
                }
            };
            let mut st = lock(&shard.stats);
            match r {
                Ok(md) => {
                    // A batch's callbacks run one after another as its answer is handled:
                    // the clock is read once per batch, not once per record.
                    let now = match &mut shard.batch {
                        Some((topic, partition, next, at))
                            if std::sync::Arc::ptr_eq(topic, &md.topic)
                                && *partition == md.partition
                                && *next == md.offset =>
                        {
                            *next += 1;
                            *at
                        }
                        batch => {
                            let now = Instant::now();
                            *batch = Some((md.topic, md.partition, md.offset + 1, now));
                            now
                        }
                    };
                    st.record(sent, now, self.sampling);
                }
                Err(e) => st.failed(e),
            }
        })
    }

    /// Takes every thread's current window: records, latency sum and maximum.
    fn take_window(&self) -> (u64, f64, f64) {
        let mut w = (0, 0.0, 0.0f64);
        for shard in lock(&self.shards).iter() {
            let mut st = lock(shard);
            w.0 += std::mem::take(&mut st.window_count);
            w.1 += std::mem::take(&mut st.window_sum);
            w.2 = w.2.max(std::mem::take(&mut st.window_max));
        }
        w
    }

    /// All threads' figures together.
    fn total(&self) -> PerfStats {
        let mut all = PerfStats::default();
        for shard in lock(&self.shards).iter() {
            let st = lock(shard);
            all.acked += st.acked;
            all.sum_ms += st.sum_ms;
            all.max_ms = all.max_ms.max(st.max_ms);
            all.samples.extend_from_slice(&st.samples);
            if all.first_error.is_none() {
                all.first_error = st.first_error.clone();
            }
        }
        all
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `runnel perf`.
pub async fn perf(b: &Bootstrap, cmd: PerfCmd) -> anyhow::Result<()> {
    match cmd {
        PerfCmd::Produce {
            topic,
            num_records,
            record_size,
            throughput,
            props,
        } => {
            let mut cfg = ProducerConfig::new(&b.bootstrap_server);
            for p in &props {
                let (k, v) = kv(p)?;
                if k == "bootstrap.servers" {
                    cfg.client = runnel_api::ClientConfig::new(&v);
                } else {
                    cfg.set(&k, &v)?;
                }
            }
            let producer = Producer::connect(cfg)
                .await
                .map_err(|e| reach(e, &b.bootstrap_server))?;
            let topic: std::sync::Arc<str> = topic.into();
            // Static, as the Java tool reuses one array: each record's copy of the value
            // is then a pointer, with no reference count to bump and drop per record.
            let payload = Bytes::from_static(Box::leak(
                (0..record_size)
                    .map(|i| b'A' + (i % 26) as u8)
                    .collect::<Vec<u8>>()
                    .into_boxed_slice(),
            ));
            // Callbacks borrow the statistics for the rest of the process (no reference
            // count bouncing between the sending thread and the sender's for every record).
            let stats: &'static PerfRun = Box::leak(Box::new(PerfRun::new(num_records)));
            // A progress line every 5 s, as kafka-producer-perf-test prints.
            let progress = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                tick.tick().await;
                let mut since = Instant::now();
                loop {
                    tick.tick().await;
                    let (count, sum, max) = stats.take_window();
                    let secs = since.elapsed().as_secs_f64();
                    since = Instant::now();
                    if count > 0 {
                        let n = count as f64;
                        eprintln!(
                            "{count} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                            n / secs,
                            n * record_size as f64 / secs / 1048576.0,
                            sum / n,
                            max
                        );
                    }
                }
            });
            // One clock read per record: its send time, from which its timestamp follows.
            let (wall_base, clock_base) = (now_ms_since_epoch(), Instant::now());
            let start = Instant::now();
            let mut window_start = Instant::now();
            let mut sent_in_window = 0u64;
            for _ in 0..num_records {
                if throughput > 0 {
                    sent_in_window += 1;
                    let due = window_start
                        + Duration::from_secs_f64(sent_in_window as f64 / throughput as f64);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    if window_start.elapsed() > Duration::from_secs(1) {
                        window_start = Instant::now();
                        sent_in_window = 0;
                    }
                }
                let t0 = Instant::now();
                let timestamp = wall_base + (t0 - clock_base).as_millis() as i64;
                producer
                    .send_with_callback(
                        ProducerRecord {
                            topic: topic.clone(),
                            value: Some(payload.clone()),
                            timestamp: Some(timestamp),
                            ..Default::default()
                        },
                        move |r| stats.delivered(t0, r),
                    )
                    .await?;
            }
            producer.flush().await?;
            let elapsed = start.elapsed().as_secs_f64();
            progress.abort();
            let mut st = stats.total();
            if let Some(e) = st.first_error.take() {
                eprintln!("first failed record: {e}");
            }
            let mut lat = std::mem::take(&mut st.samples);
            lat.sort_by(|a, b| a.total_cmp(b));
            let acked = st.acked;
            let n = acked as f64;
            let avg = if acked == 0 { 0.0 } else { st.sum_ms / n };
            println!(
                "{acked} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
                n / elapsed,
                n * record_size as f64 / elapsed / 1048576.0,
                avg,
                st.max_ms,
                percentile(&lat, 0.5),
                percentile(&lat, 0.95),
                percentile(&lat, 0.99),
                percentile(&lat, 0.999)
            );
            if acked < num_records {
                bail!("{} of {num_records} records failed", num_records - acked);
            }
        }
        PerfCmd::Consume {
            topic,
            messages,
            timeout_ms,
            props,
        } => {
            let mut cfg = ConsumerConfig::new(&b.bootstrap_server);
            cfg.set("auto.offset.reset", "earliest")?;
            for p in &props {
                let (k, v) = kv(p)?;
                cfg.set(&k, &v)?;
            }
            let admin = Admin::connect(&b.bootstrap_server)
                .await
                .map_err(|e| reach(e, &b.bootstrap_server))?;
            let info = admin.describe_topics(std::slice::from_ref(&topic)).await?;
            let mut consumer = Consumer::connect(cfg).await?;
            consumer
                .assign(
                    info[0]
                        .partitions
                        .iter()
                        .map(|p| TopicPartition::new(&topic, p.partition))
                        .collect(),
                )
                .await?;
            let start = Instant::now();
            let (mut n, mut bytes) = (0u64, 0u64);
            let mut last = Instant::now();
            while n < messages {
                let recs = consumer.poll(Duration::from_millis(100)).await?;
                if recs.is_empty() {
                    if last.elapsed() > Duration::from_millis(timeout_ms) {
                        eprintln!(
                            "WARNING: exiting before consuming the expected number of messages: timeout ({timeout_ms} ms) exceeded."
                        );
                        break;
                    }
                    continue;
                }
                last = Instant::now();
                for r in recs {
                    n += 1;
                    bytes +=
                        r.value.map_or(0, |v| v.len() as u64) + r.key.map_or(0, |k| k.len() as u64);
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let mb = bytes as f64 / 1048576.0;
            println!("data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, elapsed.sec");
            println!(
                "{mb:.4}, {:.4}, {n}, {:.4}, {secs:.3}",
                mb / secs,
                n as f64 / secs
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_api::RecordMetadata;
    use std::sync::Arc;

    fn acked(topic: &Arc<str>, partition: i32, offset: i64) -> Result<RecordMetadata, ClientError> {
        Ok(RecordMetadata {
            topic: topic.clone(),
            partition,
            offset,
            timestamp: 0,
        })
    }

    #[test]
    fn a_batch_reads_the_clock_once_and_a_new_batch_reads_it_again() {
        let run = PerfRun::new(10);
        let sent = Instant::now();
        let batch: Arc<str> = Arc::from("t");
        run.delivered(sent, acked(&batch, 0, 10));
        std::thread::sleep(Duration::from_millis(50));
        // The same batch's next record: acknowledged with the first.
        run.delivered(sent, acked(&batch, 0, 11));
        let same = run.total();
        assert_eq!(same.acked, 2);
        assert!(
            same.max_ms < 50.0,
            "the batch's second record read the clock: {}",
            same.max_ms
        );
        // Not the next offset of that batch: another answer, the clock is read.
        run.delivered(sent, acked(&batch, 0, 20));
        assert!(run.total().max_ms >= 50.0);
        // Another batch (its own shared name) right after: read again.
        std::thread::sleep(Duration::from_millis(50));
        let next: Arc<str> = Arc::from("t");
        run.delivered(sent, acked(&next, 0, 21));
        assert!(run.total().max_ms >= 100.0);
        // A later run on this thread starts from nothing: its own shard, no batch.
        let again = PerfRun::new(10);
        again.delivered(Instant::now(), acked(&next, 0, 22));
        let fresh = again.total();
        assert_eq!(fresh.acked, 1);
        assert!(fresh.max_ms < 50.0, "{}", fresh.max_ms);
        assert_eq!(run.total().acked, 4, "the first run's counts stay its own");
    }

    #[test]
    fn every_threads_deliveries_are_counted_once() {
        let run: &'static PerfRun = Box::leak(Box::new(PerfRun::new(4_000)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let batch: Arc<str> = Arc::from("t");
                    for i in 0..1_000 {
                        run.delivered(Instant::now(), acked(&batch, t, i));
                    }
                    run.delivered(Instant::now(), Err(ClientError::Closed));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (window, _, _) = run.take_window();
        assert_eq!(window, 4_000);
        assert_eq!(run.take_window().0, 0, "a window is taken once");
        let all = run.total();
        assert_eq!(all.acked, 4_000);
        // Every record is sampled (4,000 records: 1 in 1), once.
        assert_eq!(all.samples.len(), 4_000);
        assert!(all.first_error.is_some());
    }
}
