import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.OffsetOutOfRangeException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Interop checks of a Kafka-protocol broker with Apache Kafka's own Java client.
 *
 * <pre>
 * java -cp 'lib/*:build' Roundtrip BOOTSTRAP STEP [ARG]
 *   STEP: cluster | admin | roundtrip CODEC | idempotent | offsets | delete-records |
 *         create-partitions | delete-topic | acks | log-append-time | timestamp-validation |
 *         limits | all
 * </pre>
 *
 * Every step creates its own uniquely named topic(s). Consumers use assign() with no
 * group.id and no auto-commit (no group coordinator needed). Exit codes: 0 ok,
 * 1 a mismatch (message starts with "MISMATCH:"), 2 an unexpected exception, 3 the overall
 * time limit (RUNNEL_JAVA_DEADLINE_S, default 120 s) ran out.
 */
public class Roundtrip {
    static String bootstrap;
    static final String RUN = Long.toString(System.currentTimeMillis() % 100_000_000L, 36);
    static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");

    static final class Mismatch extends RuntimeException {
        Mismatch(String m) { super(m); }
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new Mismatch(what);
    }

    static void eq(Object expected, Object actual, String what) {
        boolean same = expected == null ? actual == null
                : (expected instanceof byte[] && actual instanceof byte[])
                        ? Arrays.equals((byte[]) expected, (byte[]) actual)
                        : expected.equals(actual);
        if (!same) {
            throw new Mismatch(what + ": expected " + show(expected) + " but got " + show(actual));
        }
    }

    static String show(Object o) {
        if (o instanceof byte[] b) {
            String s = new String(b, StandardCharsets.UTF_8);
            return b.length > 80 ? "bytes[" + b.length + "] \"" + s.substring(0, Math.min(60, s.length())) + "...\"" : "\"" + s + "\"";
        }
        return String.valueOf(o);
    }

    static void log(String m) {
        System.out.println("[roundtrip] " + m);
        System.out.flush();
    }

    static byte[] b(String s) { return s == null ? null : s.getBytes(StandardCharsets.UTF_8); }

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: Roundtrip BOOTSTRAP STEP [ARG]");
            System.exit(64);
        }
        bootstrap = args[0];
        long deadline = Long.parseLong(System.getenv().getOrDefault("RUNNEL_JAVA_DEADLINE_S", "120"));
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(deadline * 1000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("TIMEOUT: step '" + args[1] + "' did not finish within " + deadline + " s");
            Thread.getAllStackTraces().forEach((t, st) -> {
                if (t.getName().equals("main")) {
                    System.err.println("main thread at:");
                    for (StackTraceElement e : st) System.err.println("    at " + e);
                }
            });
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        try {
            String step = args[1];
            switch (step) {
                case "cluster" -> cluster();
                case "admin" -> admin();
                case "roundtrip" -> roundtrip(args.length > 2 ? args[2] : "none");
                case "idempotent" -> idempotent();
                case "offsets" -> offsets();
                case "delete-records" -> deleteRecords();
                case "create-partitions" -> createPartitions();
                case "delete-topic" -> deleteTopic();
                case "acks" -> acks();
                case "log-append-time" -> logAppendTime();
                case "timestamp-validation" -> timestampValidation();
                case "limits" -> limits();
                case "all" -> {
                    cluster();
                    admin();
                    for (String c : CODECS) roundtrip(c);
                    idempotent();
                    offsets();
                    deleteRecords();
                    createPartitions();
                    deleteTopic();
                    acks();
                    logAppendTime();
                    timestampValidation();
                    limits();
                }
                default -> {
                    System.err.println("unknown step " + step);
                    System.exit(64);
                }
            }
            log("OK " + String.join(" ", Arrays.copyOfRange(args, 1, args.length)));
            System.exit(0);
        } catch (Mismatch m) {
            System.err.println("MISMATCH: " + m.getMessage());
            m.printStackTrace();
            System.exit(1);
        } catch (Throwable t) {
            Throwable root = t;
            while ((root instanceof ExecutionException) && root.getCause() != null) root = root.getCause();
            System.err.println("ERROR: " + root);
            t.printStackTrace();
            System.exit(2);
        }
    }

    // ---------------------------------------------------------------- clients

    static Properties common(String clientId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        p.put("reconnect.backoff.max.ms", "1000");
        return p;
    }

    static Admin admin(String clientId) {
        Properties p = common(clientId);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    static KafkaProducer<byte[], byte[]> producer(String clientId, Map<String, String> extra) {
        Properties p = common(clientId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "45000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String clientId) {
        return consumer(clientId, new Properties());
    }

    static KafkaConsumer<byte[], byte[]> consumer(String clientId, Properties extra) {
        Properties p = common(clientId);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "200");
        p.put(ConsumerConfig.CHECK_CRCS_CONFIG, "true");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static String topic(String what) {
        return "java-" + what + "-" + RUN;
    }

    static void createTopic(Admin admin, String name, int partitions, Map<String, String> configs) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs))).all().get(30, TimeUnit.SECONDS);
        waitForLeaders(admin, name, partitions);
    }

    static TopicDescription describe(Admin admin, String name) throws Exception {
        return admin.describeTopics(List.of(name)).allTopicNames().get(30, TimeUnit.SECONDS).get(name);
    }

    static void waitForLeaders(Admin admin, String name, int partitions) throws Exception {
        long until = System.currentTimeMillis() + 20_000;
        String last = "";
        while (System.currentTimeMillis() < until) {
            try {
                TopicDescription d = describe(admin, name);
                if (d.partitions().size() == partitions && d.partitions().stream().allMatch(p -> p.leader() != null)) return;
                last = d.toString();
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) throw e;
                last = e.getCause().toString();
            }
            Thread.sleep(100);
        }
        throw new Mismatch("topic " + name + " did not get " + partitions + " partitions with leaders within 20 s; last: " + last);
    }

    /** Reads from the beginning of every given partition until `expected` records arrived (or 30 s). */
    static List<ConsumerRecord<byte[], byte[]>> consumeAll(String clientId, Collection<TopicPartition> tps, int expected) {
        return consumeAll(clientId, tps, expected, new Properties());
    }

    static List<ConsumerRecord<byte[], byte[]>> consumeAll(String clientId, Collection<TopicPartition> tps, int expected, Properties extra) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(clientId, extra)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            long until = System.currentTimeMillis() + 30_000;
            while (out.size() < expected && System.currentTimeMillis() < until) {
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(500));
                rs.forEach(out::add);
            }
            // A short extra poll: nothing beyond what was produced may show up.
            c.poll(Duration.ofMillis(300)).forEach(out::add);
        }
        return out;
    }

    // ---------------------------------------------------------------- steps

    static void cluster() throws Exception {
        try (Admin admin = admin("rt-cluster")) {
            DescribeClusterResult r = admin.describeCluster();
            Collection<Node> nodes = r.nodes().get(30, TimeUnit.SECONDS);
            String clusterId = r.clusterId().get(30, TimeUnit.SECONDS);
            Node controller = r.controller().get(30, TimeUnit.SECONDS);
            log("describeCluster: clusterId=" + clusterId + " nodes=" + nodes + " controller=" + controller);
            check(!nodes.isEmpty(), "describeCluster returned no nodes");
            check(clusterId != null && !clusterId.isEmpty(), "describeCluster returned no cluster id");
            String[] hp = bootstrap.split(":");
            check(nodes.stream().anyMatch(n -> n.host().equals(hp[0]) && n.port() == Integer.parseInt(hp[1])),
                    "no node advertises the bootstrap address " + bootstrap + ": " + nodes);
            check(controller != null && !controller.isEmpty(), "describeCluster returned no controller node");
            check(nodes.stream().anyMatch(n -> n.id() == controller.id()),
                    "controller " + controller + " is not one of the nodes " + nodes);

            // Broker configs are described with Kafka's property names.
            int nodeId = nodes.iterator().next().id();
            ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, Integer.toString(nodeId));
            Config bc = admin.describeConfigs(List.of(br)).all().get(30, TimeUnit.SECONDS).get(br);
            check(bc != null && !bc.entries().isEmpty(), "describeConfigs(BROKER " + nodeId + ") returned no entries");
            check(bc.get("num.partitions") != null, "broker configs lack num.partitions: " + names(bc));
        }
    }

    static Set<String> names(Config c) {
        return c.entries().stream().map(ConfigEntry::name).collect(Collectors.toCollection(java.util.TreeSet::new));
    }

    static void admin() throws Exception {
        String t = topic("admin");
        try (Admin admin = admin("rt-admin")) {
            createTopic(admin, t, 3, Map.of("retention.ms", "3600000", "cleanup.policy", "delete"));

            // create again: TopicExistsException
            try {
                admin.createTopics(List.of(new NewTopic(t, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("creating existing topic " + t + " succeeded; expected TopicExistsException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException, "creating existing topic: expected TopicExistsException, got " + e.getCause());
            }
            // invalid name: InvalidTopicException
            try {
                admin.createTopics(List.of(new NewTopic("bad/name-" + RUN, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("creating topic 'bad/name' succeeded; expected InvalidTopicException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidTopicException, "creating 'bad/name': expected InvalidTopicException, got " + e.getCause());
            }

            Set<String> names = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            check(names.contains(t), "listTopics lacks " + t + ": " + names);
            check(names.stream().noneMatch(n -> n.startsWith("__")), "listTopics (no internal) lists internal topics: " + names);

            TopicDescription d = describe(admin, t);
            log("describeTopics: " + d);
            eq(t, d.name(), "describeTopics name");
            eq(false, d.isInternal(), "describeTopics isInternal");
            check(d.topicId() != null && !d.topicId().equals(Uuid.ZERO_UUID), "describeTopics: topic id is zero/null: " + d.topicId());
            eq(3, d.partitions().size(), "describeTopics partition count");
            for (int i = 0; i < 3; i++) {
                TopicPartitionInfo p = d.partitions().get(i);
                eq(i, p.partition(), "partition index at position " + i);
                check(p.leader() != null && !p.leader().isEmpty(), "partition " + i + " has no leader");
                eq(1, p.replicas().size(), "partition " + i + " replica count");
                eq(p.leader().id(), p.replicas().get(0).id(), "partition " + i + " replica == leader");
                eq(1, p.isr().size(), "partition " + i + " ISR size");
                eq(p.leader().id(), p.isr().get(0).id(), "partition " + i + " ISR == leader");
            }

            // describeConfigs of the topic
            ConfigResource tr = new ConfigResource(ConfigResource.Type.TOPIC, t);
            Config c = admin.describeConfigs(List.of(tr)).all().get(30, TimeUnit.SECONDS).get(tr);
            for (String k : List.of("cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes", "max.message.bytes",
                    "min.insync.replicas", "compression.type", "message.timestamp.type")) {
                check(c.get(k) != null, "topic describeConfigs lacks " + k + "; has " + names(c));
            }
            ConfigEntry ret = c.get("retention.ms");
            eq("3600000", ret.value(), "retention.ms value");
            eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, ret.source(), "retention.ms source");
            eq(false, ret.isDefault(), "retention.ms isDefault");
            eq("delete", c.get("cleanup.policy").value(), "cleanup.policy value");
            ConfigEntry seg = c.get("segment.bytes");
            check(seg.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "segment.bytes should not be a topic override: " + seg);
            eq("1073741824", seg.value(), "segment.bytes default value");
            eq("producer", c.get("compression.type").value(), "compression.type default");
            eq("CreateTime", c.get("message.timestamp.type").value(), "message.timestamp.type default");

            // incrementalAlterConfigs: SET two, then DELETE one
            Map<ConfigResource, Collection<AlterConfigOp>> ops = Map.of(tr, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET)));
            admin.incrementalAlterConfigs(ops).all().get(30, TimeUnit.SECONDS);
            Config c2 = waitConfig(admin, tr, "max.message.bytes", "2000000");
            eq("7200000", c2.get("retention.ms").value(), "retention.ms after SET");
            eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c2.get("max.message.bytes").source(), "max.message.bytes source after SET");

            admin.incrementalAlterConfigs(Map.of(tr, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get(30, TimeUnit.SECONDS);
            Config c3 = waitConfig(admin, tr, "retention.ms", "604800000");
            check(c3.get("retention.ms").source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    "retention.ms still a topic override after DELETE: " + c3.get("retention.ms"));
            eq("2000000", c3.get("max.message.bytes").value(), "max.message.bytes kept after deleting retention.ms");

            // an unknown config name is rejected
            try {
                admin.incrementalAlterConfigs(Map.of(tr, List.of(
                        new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("incrementalAlterConfigs with an unknown config name succeeded; expected InvalidConfigurationException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidConfigurationException
                        || e.getCause() instanceof org.apache.kafka.common.errors.InvalidRequestException,
                        "unknown config name: expected InvalidConfigurationException, got " + e.getCause());
            }

            admin.deleteTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
        }
    }

    static Config waitConfig(Admin admin, ConfigResource r, String key, String value) throws Exception {
        long until = System.currentTimeMillis() + 10_000;
        Config c = null;
        while (System.currentTimeMillis() < until) {
            c = admin.describeConfigs(List.of(r)).all().get(30, TimeUnit.SECONDS).get(r);
            ConfigEntry e = c.get(key);
            if (e != null && value.equals(e.value())) return c;
            Thread.sleep(100);
        }
        throw new Mismatch("config " + key + " of " + r + " did not become " + value + " within 10 s: " + (c == null ? null : c.get(key)));
    }

    record Sent(int partition, byte[] key, byte[] value, List<Header> headers, long timestamp, long offset) {}

    static void roundtrip(String codec) throws Exception {
        check(CODECS.contains(codec), "unknown codec " + codec);
        String t = topic("rt-" + codec);
        int partitions = 3;
        int perPartition = 40;
        long t0 = System.currentTimeMillis() - 3_600_000L;
        try (Admin admin = admin("rt-admin-" + codec)) {
            createTopic(admin, t, partitions, Map.of());
        }
        log("topic=" + t);
        List<Sent> expected = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer("rt-producer-" + codec, Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false",
                ProducerConfig.BATCH_SIZE_CONFIG, "16384"))) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            List<Object[]> pending = new ArrayList<>();
            for (int i = 0; i < perPartition; i++) {
                for (int part = 0; part < partitions; part++) {
                    int n = i * partitions + part;
                    byte[] key = (n % 17 == 5) ? null : b("key-" + codec + "-" + n);
                    byte[] value;
                    if (n % 23 == 7) value = null; // tombstone
                    else if (n == 31) value = b("big-" + "0123456789abcdef".repeat(6000)); // ~96 KiB, spans batches
                    else value = b("value-" + codec + "-" + n + "-" + "x".repeat(n % 50));
                    List<Header> headers = new ArrayList<>();
                    headers.add(new RecordHeader("codec", b(codec)));
                    headers.add(new RecordHeader("n", b(Integer.toString(n))));
                    if (n % 5 == 0) headers.add(new RecordHeader("n", b("dup-" + n))); // repeated header key
                    if (n % 7 == 0) headers.add(new RecordHeader("empty", new byte[0]));
                    if (n % 11 == 0) headers.add(new RecordHeader("null", (byte[]) null));
                    long ts = t0 + n * 10L;
                    futures.add(p.send(new ProducerRecord<>(t, part, ts, key, value, headers)));
                    pending.add(new Object[]{part, key, value, headers, ts});
                }
                if (i == perPartition / 2) p.flush(); // at least two batches per partition
            }
            p.flush();
            for (int i = 0; i < futures.size(); i++) {
                RecordMetadata md = futures.get(i).get(60, TimeUnit.SECONDS);
                Object[] e = pending.get(i);
                @SuppressWarnings("unchecked") List<Header> hs = (List<Header>) e[3];
                eq(e[0], md.partition(), "produce #" + i + " partition in RecordMetadata");
                eq(e[4], md.timestamp(), "produce #" + i + " timestamp in RecordMetadata (CreateTime)");
                expected.add(new Sent((int) e[0], (byte[]) e[1], (byte[]) e[2], hs, (long) e[4], md.offset()));
            }
        }
        // Offsets in each partition are 0..perPartition-1 in send order.
        for (int part = 0; part < partitions; part++) {
            final int fp = part;
            List<Long> offs = expected.stream().filter(s -> s.partition == fp).map(s -> s.offset).toList();
            List<Long> want = new ArrayList<>();
            for (long o = 0; o < perPartition; o++) want.add(o);
            eq(want, offs, "acknowledged offsets of partition " + part);
        }
        log(codec + ": produced " + expected.size() + " records");

        List<TopicPartition> tps = new ArrayList<>();
        for (int part = 0; part < partitions; part++) tps.add(new TopicPartition(t, part));
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-consumer-" + codec, tps, expected.size());
        eq(expected.size(), got.size(), codec + ": number of records consumed");
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> byPart = new HashMap<>();
        for (ConsumerRecord<byte[], byte[]> r : got) {
            eq(t, r.topic(), "consumed record topic");
            byPart.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
        }
        for (Sent s : expected) {
            List<ConsumerRecord<byte[], byte[]>> l = byPart.get(s.partition);
            check(l != null, codec + ": nothing consumed from partition " + s.partition);
            check(s.offset < l.size(), codec + ": partition " + s.partition + " consumed only " + l.size() + " records");
            ConsumerRecord<byte[], byte[]> r = l.get((int) s.offset);
            String where = codec + " p" + s.partition + "@" + s.offset;
            eq(s.offset, r.offset(), where + " offset (records out of order?)");
            eq(s.key, r.key(), where + " key");
            eq(s.value, r.value(), where + " value");
            eq(s.timestamp, r.timestamp(), where + " timestamp");
            eq(TimestampType.CREATE_TIME, r.timestampType(), where + " timestamp type");
            Header[] hs = r.headers().toArray();
            eq(s.headers.size(), hs.length, where + " header count");
            for (int i = 0; i < hs.length; i++) {
                eq(s.headers.get(i).key(), hs[i].key(), where + " header[" + i + "] key");
                eq(s.headers.get(i).value(), hs[i].value(), where + " header[" + i + "] value");
            }
            check(r.leaderEpoch().isPresent(), where + " record has no leader epoch (partitionLeaderEpoch -1)");
        }
        log(codec + ": consumed and verified " + got.size() + " records");

        // Fetch limits smaller than one batch: the broker still returns the first batch
        // (KIP-74), so a consumer with tiny fetch sizes reads everything.
        Properties tiny = new Properties();
        tiny.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, "1024");
        tiny.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "512");
        List<ConsumerRecord<byte[], byte[]>> small = consumeAll("rt-tiny-" + codec, tps, expected.size(), tiny);
        eq(expected.size(), small.size(), codec + ": records consumed with fetch.max.bytes=1024, max.partition.fetch.bytes=512");
        for (ConsumerRecord<byte[], byte[]> r : small) {
            Sent s = expected.stream().filter(e -> e.partition == r.partition() && e.offset == r.offset()).findFirst().orElse(null);
            check(s != null, codec + ": tiny-fetch consumer got unexpected p" + r.partition() + "@" + r.offset());
            eq(s.value, r.value(), codec + " tiny-fetch p" + r.partition() + "@" + r.offset() + " value");
        }

        // Seeking into the middle of a (compressed) batch starts exactly at that offset.
        try (KafkaConsumer<byte[], byte[]> c = consumer("rt-seek-" + codec)) {
            TopicPartition tp0 = new TopicPartition(t, 0);
            c.assign(List.of(tp0));
            c.seek(tp0, 7);
            List<ConsumerRecord<byte[], byte[]>> rs = new ArrayList<>();
            long until = System.currentTimeMillis() + 20_000;
            while (rs.isEmpty() && System.currentTimeMillis() < until) c.poll(Duration.ofMillis(300)).forEach(rs::add);
            check(!rs.isEmpty(), codec + ": nothing consumed after seek(p0, 7)");
            eq(7L, rs.get(0).offset(), codec + ": first offset after seek(p0, 7)");
            Sent s7 = expected.stream().filter(e -> e.partition == 0 && e.offset == 7).findFirst().orElseThrow();
            eq(s7.value, rs.get(0).value(), codec + ": value at p0@7 after seek");
        }

        try (KafkaConsumer<byte[], byte[]> c = consumer("rt-offsets-" + codec)) {
            Map<TopicPartition, Long> begin = c.beginningOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                eq(0L, begin.get(tp), "beginningOffsets " + tp);
                eq((long) perPartition, end.get(tp), "endOffsets " + tp);
            }
        }
    }

    static void idempotent() throws Exception {
        String t = topic("idem");
        try (Admin admin = admin("rt-admin-idem")) {
            createTopic(admin, t, 1, Map.of());
        }
        int n = 60;
        // Java producer defaults: enable.idempotence=true, acks=all (InitProducerId + sequence numbers).
        Map<String, String> extra = new HashMap<>();
        extra.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        extra.put(ProducerConfig.BATCH_SIZE_CONFIG, "1024");
        extra.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer("rt-idem", extra)) {
            for (int i = 0; i < n; i++) {
                fs.add(p.send(new ProducerRecord<>(t, 0, b("k" + i), b("idempotent-" + i + "-" + "y".repeat(100)))));
            }
            p.flush();
            for (int i = 0; i < n; i++) eq((long) i, fs.get(i).get(60, TimeUnit.SECONDS).offset(), "idempotent produce #" + i + " offset");
        }
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-idem-c", List.of(new TopicPartition(t, 0)), n);
        eq(n, got.size(), "idempotent: records consumed (duplicates or losses?)");
        for (int i = 0; i < n; i++) {
            eq((long) i, got.get(i).offset(), "idempotent record offset");
            eq(b("idempotent-" + i + "-" + "y".repeat(100)), got.get(i).value(), "idempotent record " + i + " value");
        }
    }

    static void offsets() throws Exception {
        String t = topic("offsets");
        TopicPartition tp = new TopicPartition(t, 0);
        long t0 = System.currentTimeMillis() - 600_000L;
        try (Admin admin = admin("rt-admin-offsets")) {
            createTopic(admin, t, 1, Map.of());
            try (KafkaProducer<byte[], byte[]> p = producer("rt-offsets-p", Map.of(
                    ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false", ProducerConfig.LINGER_MS_CONFIG, "100"))) {
                // offsets 0..9 in one batch (ts t0 + i*1000), then 10..19 in another
                for (int i = 0; i < 10; i++) p.send(new ProducerRecord<>(t, 0, t0 + i * 1000L, b("k" + i), b("v" + i)));
                p.flush();
                for (int i = 10; i < 20; i++) p.send(new ProducerRecord<>(t, 0, t0 + i * 1000L, b("k" + i), b("v" + i)));
                p.flush();
            }
            try (KafkaConsumer<byte[], byte[]> c = consumer("rt-offsets-c")) {
                eq(0L, c.beginningOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "beginningOffsets");
                eq(20L, c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "endOffsets");
                long[][] cases = {
                        {t0 - 5000, 0, t0},            // before everything -> first record
                        {t0, 0, t0},
                        {t0 + 3500, 4, t0 + 4000},     // inside the first batch
                        {t0 + 9000, 9, t0 + 9000},     // last record of the first batch
                        {t0 + 9001, 10, t0 + 10000},   // first record of the second batch
                        {t0 + 15200, 16, t0 + 16000},
                        {t0 + 19000, 19, t0 + 19000},
                };
                for (long[] cs : cases) {
                    OffsetAndTimestamp ot = c.offsetsForTimes(Map.of(tp, cs[0]), Duration.ofSeconds(30)).get(tp);
                    check(ot != null, "offsetsForTimes(t0+" + (cs[0] - t0) + ") returned null; expected offset " + cs[1]);
                    eq(cs[1], ot.offset(), "offsetsForTimes(t0+" + (cs[0] - t0) + ") offset");
                    eq(cs[2], ot.timestamp(), "offsetsForTimes(t0+" + (cs[0] - t0) + ") timestamp");
                }
                OffsetAndTimestamp none = c.offsetsForTimes(Map.of(tp, t0 + 20_000L), Duration.ofSeconds(30)).get(tp);
                check(none == null, "offsetsForTimes past the last timestamp should be null, got " + none);
            }
            ListOffsetsResult.ListOffsetsResultInfo max = admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp()))
                    .partitionResult(tp).get(30, TimeUnit.SECONDS);
            eq(19L, max.offset(), "listOffsets(maxTimestamp) offset");
            eq(t0 + 19000L, max.timestamp(), "listOffsets(maxTimestamp) timestamp");
            eq(0L, admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get(30, TimeUnit.SECONDS).offset(), "listOffsets(earliest)");
            eq(20L, admin.listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp).get(30, TimeUnit.SECONDS).offset(), "listOffsets(latest)");
        }
    }

    static void deleteRecords() throws Exception {
        String t = topic("delrec");
        TopicPartition tp = new TopicPartition(t, 0);
        try (Admin admin = admin("rt-admin-delrec")) {
            createTopic(admin, t, 1, Map.of());
            try (KafkaProducer<byte[], byte[]> p = producer("rt-delrec-p", Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
                for (int i = 0; i < 20; i++) {
                    p.send(new ProducerRecord<>(t, 0, b("k" + i), b("v" + i)));
                    if (i % 4 == 3) p.flush(); // several batches
                }
                p.flush();
            }
            DeletedRecords dr = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(6))).lowWatermarks().get(tp).get(30, TimeUnit.SECONDS);
            eq(6L, dr.lowWatermark(), "deleteRecords(before 6) low watermark");
            eq(6L, admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get(30, TimeUnit.SECONDS).offset(), "listOffsets(earliest) after deleteRecords");
            try (KafkaConsumer<byte[], byte[]> c = consumer("rt-delrec-c")) {
                eq(6L, c.beginningOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "beginningOffsets after deleteRecords");
                eq(20L, c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "endOffsets after deleteRecords");
            }
            List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-delrec-c2", List.of(tp), 14);
            eq(14, got.size(), "records readable after deleteRecords(before 6)");
            eq(6L, got.get(0).offset(), "first readable offset after deleteRecords");
            eq(b("v6"), got.get(0).value(), "first readable value after deleteRecords");

            // Fetching below the log start offset is OFFSET_OUT_OF_RANGE (auto.offset.reset=none surfaces it).
            Properties p = common("rt-delrec-oor");
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
            try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
                c.assign(List.of(tp));
                c.seek(tp, 2);
                boolean raised = false;
                long until = System.currentTimeMillis() + 15_000;
                while (!raised && System.currentTimeMillis() < until) {
                    try {
                        ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(500));
                        check(rs.isEmpty(), "fetch at offset 2 (below log start 6) returned records starting at " + (rs.isEmpty() ? -1 : rs.iterator().next().offset()));
                    } catch (org.apache.kafka.clients.consumer.OffsetOutOfRangeException e) {
                        raised = true;
                    }
                }
                check(raised, "fetch below the log start offset did not raise OffsetOutOfRangeException within 15 s");
            }

            // Deleting beyond the high watermark is OFFSET_OUT_OF_RANGE.
            try {
                admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(1000))).lowWatermarks().get(tp).get(30, TimeUnit.SECONDS);
                throw new Mismatch("deleteRecords(before 1000) on a 20-record partition succeeded; expected OffsetOutOfRangeException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof OffsetOutOfRangeException, "deleteRecords beyond HW: expected OffsetOutOfRangeException, got " + e.getCause());
            }
            // beforeOffset(-1) means "up to the high watermark".
            DeletedRecords all = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(-1))).lowWatermarks().get(tp).get(30, TimeUnit.SECONDS);
            eq(20L, all.lowWatermark(), "deleteRecords(before -1 = HW) low watermark");
        }
    }

    static void createPartitions() throws Exception {
        String t = topic("parts");
        try (Admin admin = admin("rt-admin-parts")) {
            createTopic(admin, t, 1, Map.of());
            admin.createPartitions(Map.of(t, NewPartitions.increaseTo(3))).all().get(30, TimeUnit.SECONDS);
            waitForLeaders(admin, t, 3);
            try {
                admin.createPartitions(Map.of(t, NewPartitions.increaseTo(2))).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("createPartitions decreasing 3 -> 2 succeeded; expected InvalidPartitionsException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidPartitionsException, "decreasing partitions: expected InvalidPartitionsException, got " + e.getCause());
            }
            try {
                admin.createPartitions(Map.of("no-such-topic-" + RUN, NewPartitions.increaseTo(2))).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("createPartitions on a missing topic succeeded; expected UnknownTopicOrPartitionException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException, "createPartitions on a missing topic: expected UnknownTopicOrPartitionException, got " + e.getCause());
            }
        }
        // The new partitions take writes and serve reads.
        try (KafkaProducer<byte[], byte[]> p = producer("rt-parts-p", Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
            for (int part = 0; part < 3; part++) {
                RecordMetadata md = p.send(new ProducerRecord<>(t, part, b("k"), b("p" + part))).get(60, TimeUnit.SECONDS);
                eq(part, md.partition(), "produce to new partition");
                eq(0L, md.offset(), "first offset of partition " + part);
            }
        }
        List<TopicPartition> tps = List.of(new TopicPartition(t, 0), new TopicPartition(t, 1), new TopicPartition(t, 2));
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-parts-c", tps, 3);
        eq(3, got.size(), "records consumed from 3 partitions");
        for (ConsumerRecord<byte[], byte[]> r : got) eq(b("p" + r.partition()), r.value(), "value in partition " + r.partition());
    }

    static void deleteTopic() throws Exception {
        String t = topic("del");
        try (Admin admin = admin("rt-admin-del")) {
            createTopic(admin, t, 2, Map.of());
            try (KafkaProducer<byte[], byte[]> p = producer("rt-del-p", Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
                p.send(new ProducerRecord<>(t, 0, b("k"), b("before-delete"))).get(60, TimeUnit.SECONDS);
            }
            admin.deleteTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
            long until = System.currentTimeMillis() + 15_000;
            while (admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(t)) {
                check(System.currentTimeMillis() < until, "deleted topic " + t + " still listed after 15 s");
                Thread.sleep(100);
            }
            try {
                describe(admin, t);
                throw new Mismatch("describeTopics of deleted topic succeeded; expected UnknownTopicOrPartitionException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException, "describe deleted topic: expected UnknownTopicOrPartitionException, got " + e.getCause());
            }
            try {
                admin.deleteTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
                throw new Mismatch("deleting a deleted topic succeeded; expected UnknownTopicOrPartitionException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException, "delete missing topic: expected UnknownTopicOrPartitionException, got " + e.getCause());
            }
            // Re-creating the name gives a fresh, empty topic.
            long until2 = System.currentTimeMillis() + 20_000;
            while (true) {
                try {
                    createTopic(admin, t, 1, Map.of());
                    break;
                } catch (ExecutionException e) {
                    // Kafka may briefly answer TopicExists while the deletion completes.
                    check(e.getCause() instanceof TopicExistsException && System.currentTimeMillis() < until2,
                            "re-creating deleted topic failed: " + e.getCause());
                    Thread.sleep(200);
                }
            }
            TopicPartition tp = new TopicPartition(t, 0);
            try (KafkaConsumer<byte[], byte[]> c = consumer("rt-del-c")) {
                eq(0L, c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp), "end offset of re-created topic");
            }
            admin.deleteTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
        }
    }

    static void acks() throws Exception {
        String t = topic("acks");
        TopicPartition tp = new TopicPartition(t, 0);
        try (Admin admin = admin("rt-admin-acks")) {
            createTopic(admin, t, 1, Map.of());
        }
        int n = 0;
        for (String acks : List.of("0", "1", "all")) {
            try (KafkaProducer<byte[], byte[]> p = producer("rt-acks-" + acks, Map.of(
                    ProducerConfig.ACKS_CONFIG, acks, ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"))) {
                List<Future<RecordMetadata>> fs = new ArrayList<>();
                for (int i = 0; i < 10; i++) fs.add(p.send(new ProducerRecord<>(t, 0, b("k"), b("acks=" + acks + " #" + i))));
                p.flush();
                for (int i = 0; i < 10; i++) {
                    RecordMetadata md = fs.get(i).get(60, TimeUnit.SECONDS);
                    if (acks.equals("0")) eq(-1L, md.offset(), "acks=0 RecordMetadata offset (unknown)");
                    else eq((long) (n + i), md.offset(), "acks=" + acks + " offset of #" + i);
                }
            }
            n += 10;
            if (acks.equals("0")) {
                // acks=0 gets no answer: wait until the broker has appended all ten.
                long until = System.currentTimeMillis() + 10_000;
                try (KafkaConsumer<byte[], byte[]> c = consumer("rt-acks-end")) {
                    while (c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp) < 10 && System.currentTimeMillis() < until) Thread.sleep(100);
                }
            }
        }
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-acks-c", List.of(tp), n);
        eq(n, got.size(), "records consumed after acks=0/1/all");
        int i = 0;
        for (String acks : List.of("0", "1", "all")) {
            for (int k = 0; k < 10; k++, i++) eq(b("acks=" + acks + " #" + k), got.get(i).value(), "record " + i + " value");
        }
    }

    static void logAppendTime() throws Exception {
        String t = topic("lat");
        TopicPartition tp = new TopicPartition(t, 0);
        try (Admin admin = admin("rt-admin-lat")) {
            createTopic(admin, t, 1, Map.of("message.timestamp.type", "LogAppendTime"));
        }
        long old = System.currentTimeMillis() - 86_400_000L;
        long before = System.currentTimeMillis();
        List<RecordMetadata> mds = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = producer("rt-lat-p", Map.of(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false", ProducerConfig.COMPRESSION_TYPE_CONFIG, "gzip"))) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < 10; i++) fs.add(p.send(new ProducerRecord<>(t, 0, old + i, b("k" + i), b("v" + i))));
            p.flush();
            for (Future<RecordMetadata> f : fs) mds.add(f.get(60, TimeUnit.SECONDS));
        }
        long after = System.currentTimeMillis();
        for (RecordMetadata md : mds) {
            check(md.timestamp() >= before - 5_000 && md.timestamp() <= after + 5_000,
                    "LogAppendTime topic: RecordMetadata timestamp " + md.timestamp() + " is not the broker's append time (produced with " + old + ", window " + before + ".." + after + ")");
        }
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-lat-c", List.of(tp), 10);
        eq(10, got.size(), "LogAppendTime records consumed");
        for (int i = 0; i < 10; i++) {
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            eq(TimestampType.LOG_APPEND_TIME, r.timestampType(), "LogAppendTime record " + i + " timestamp type");
            eq(mds.get(i).timestamp(), r.timestamp(), "LogAppendTime record " + i + " timestamp == RecordMetadata timestamp");
            eq(b("v" + i), r.value(), "LogAppendTime record " + i + " value");
        }
    }

    static void timestampValidation() throws Exception {
        String t = topic("tsval");
        try (Admin admin = admin("rt-admin-tsval")) {
            createTopic(admin, t, 1, Map.of("message.timestamp.before.max.ms", "3600000", "message.timestamp.after.max.ms", "3600000"));
        }
        try (KafkaProducer<byte[], byte[]> p = producer("rt-tsval-p", Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false", ProducerConfig.RETRIES_CONFIG, "0"))) {
            long now = System.currentTimeMillis();
            eq(0L, p.send(new ProducerRecord<>(t, 0, now, b("k"), b("ok"))).get(60, TimeUnit.SECONDS).offset(), "in-range timestamp accepted");
            for (long ts : new long[]{now - 7_200_000L, now + 7_200_000L}) {
                try {
                    p.send(new ProducerRecord<>(t, 0, ts, b("k"), b("bad"))).get(60, TimeUnit.SECONDS);
                    throw new Mismatch("record with timestamp now" + (ts < now ? "-2h" : "+2h") + " accepted despite message.timestamp.*.max.ms=1h; expected InvalidTimestampException");
                } catch (ExecutionException e) {
                    check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidTimestampException,
                            "timestamp out of range: expected InvalidTimestampException, got " + e.getCause());
                }
            }
        }
    }

    static void limits() throws Exception {
        String t = topic("limits");
        TopicPartition tp = new TopicPartition(t, 0);
        try (Admin admin = admin("rt-admin-limits")) {
            createTopic(admin, t, 1, Map.of("max.message.bytes", "10000"));
        }
        try (KafkaProducer<byte[], byte[]> p = producer("rt-limits-p", Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false", ProducerConfig.RETRIES_CONFIG, "0"))) {
            eq(0L, p.send(new ProducerRecord<>(t, 0, b("k"), new byte[5000])).get(60, TimeUnit.SECONDS).offset(), "5000-byte record under max.message.bytes=10000");
            try {
                p.send(new ProducerRecord<>(t, 0, b("k"), new byte[20000])).get(60, TimeUnit.SECONDS);
                throw new Mismatch("a 20000-byte batch was accepted by a topic with max.message.bytes=10000; expected RecordTooLargeException");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.RecordTooLargeException,
                        "oversized batch: expected RecordTooLargeException, got " + e.getCause());
            }
            eq(1L, p.send(new ProducerRecord<>(t, 0, b("k"), b("after"))).get(60, TimeUnit.SECONDS).offset(), "offset of the record after a rejected one");
        }
        List<ConsumerRecord<byte[], byte[]>> got = consumeAll("rt-limits-c", List.of(tp), 2);
        eq(2, got.size(), "records stored around a rejected oversized batch");
    }
}
