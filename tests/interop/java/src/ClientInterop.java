import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * The Java half of tests/interop/test_runnel_clients.py: Apache Kafka's own client reads what
 * Runnel's client wrote, writes what Runnel's client reads, and says where its default
 * partitioner puts a key. Bytes travel as lowercase hex, null as null (JSON) or "-" (input).
 *
 * <pre>
 * java -cp 'lib/*:build' ClientInterop consume BOOTSTRAP TOPIC COUNT
 *     all partitions from the beginning; one JSON line per record:
 *     {"partition","offset","timestamp","ts_type","key","value","headers":[[key,hex],...]}
 *     (a short extra poll after COUNT records: anything more is printed too)
 * java -cp 'lib/*:build' ClientInterop produce BOOTSTRAP TOPIC CODEC &lt; RECORDS
 *     RECORDS: one line per record, tab-separated: partition, timestamp, key hex, value hex,
 *     headers as khex=vhex joined by ',' ("-" for a null key/value/header value; empty for
 *     no headers). acks=all, idempotence off. Prints {"partition","offset","timestamp"} each.
 * java -cp 'lib/*:build' ClientInterop partition-for PARTITIONS KEY...
 *     "KEY MURMUR2 PARTITION" per key (UTF-8), from Utils.murmur2 and
 *     BuiltInPartitioner.partitionForKey.
 * </pre>
 *
 * Exit codes: 0 ok, 2 an exception, 3 the time limit (RUNNEL_JAVA_DEADLINE_S, default 90 s).
 */
public class ClientInterop {
    static final HexFormat HEX = HexFormat.of();

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: ClientInterop consume|produce|partition-for ...");
            System.exit(64);
        }
        long deadline = Long.parseLong(System.getenv().getOrDefault("RUNNEL_JAVA_DEADLINE_S", "90"));
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(deadline * 1000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("TIMEOUT: '" + args[0] + "' did not finish within " + deadline + " s");
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        try {
            switch (args[0]) {
                case "consume" -> consume(args[1], args[2], Integer.parseInt(args[3]));
                case "produce" -> produce(args[1], args[2], args[3]);
                case "partition-for" -> partitionFor(Integer.parseInt(args[1]), List.of(args).subList(2, args.length));
                default -> {
                    System.err.println("unknown mode " + args[0]);
                    System.exit(64);
                }
            }
            System.out.flush();
            System.exit(0);
        } catch (Throwable t) {
            System.err.println("ERROR: " + t);
            t.printStackTrace();
            System.exit(2);
        }
    }

    static Properties common(String bootstrap, String clientId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        p.put("reconnect.backoff.max.ms", "1000");
        return p;
    }

    static String hex(byte[] b) {
        return b == null ? "null" : "\"" + HEX.formatHex(b) + "\"";
    }

    static byte[] unhex(String s) {
        return s.equals("-") ? null : HEX.parseHex(s);
    }

    static String jsonString(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    static void consume(String bootstrap, String topic, int count) throws Exception {
        int partitions;
        try (Admin admin = Admin.create(common(bootstrap, "ci-admin"))) {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            partitions = d.partitions().size();
        }
        Properties p = common(bootstrap, "ci-consumer");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "200");
        p.put(ConsumerConfig.CHECK_CRCS_CONFIG, "true");
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
        int seen = 0;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            long until = System.currentTimeMillis() + 30_000;
            boolean extraPolled = false;
            while (true) {
                boolean enough = seen >= count;
                if (enough && extraPolled) break;
                if (!enough && System.currentTimeMillis() > until) break;
                // After COUNT records, one short poll: nothing beyond what was produced may show up.
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(enough ? 500 : 300))) {
                    StringBuilder h = new StringBuilder();
                    for (Header x : r.headers()) {
                        if (h.length() > 0) h.append(',');
                        h.append('[').append(jsonString(x.key())).append(',').append(hex(x.value())).append(']');
                    }
                    System.out.println("{\"partition\":" + r.partition() + ",\"offset\":" + r.offset()
                            + ",\"timestamp\":" + r.timestamp() + ",\"ts_type\":\""
                            + (r.timestampType() == TimestampType.CREATE_TIME ? "create"
                                : r.timestampType() == TimestampType.LOG_APPEND_TIME ? "append" : "?")
                            + "\",\"key\":" + hex(r.key()) + ",\"value\":" + hex(r.value()) + ",\"headers\":[" + h + "]}");
                    seen++;
                }
                if (enough) extraPolled = true;
            }
        }
        System.err.println("consumed " + seen + " of " + count);
    }

    static void produce(String bootstrap, String topic, String codec) throws Exception {
        Properties p = common(bootstrap, "ci-producer");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "45000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isEmpty()) continue;
                String[] f = line.split("\t", -1);
                List<Header> headers = new ArrayList<>();
                if (!f[4].isEmpty()) {
                    for (String kv : f[4].split(",")) {
                        String[] x = kv.split("=", 2);
                        headers.add(new RecordHeader(new String(HEX.parseHex(x[0]), StandardCharsets.UTF_8), unhex(x[1])));
                    }
                }
                fs.add(prod.send(new ProducerRecord<>(topic, Integer.parseInt(f[0]), Long.parseLong(f[1]),
                        unhex(f[2]), unhex(f[3]), headers)));
            }
            prod.flush();
            for (Future<RecordMetadata> f : fs) {
                RecordMetadata md = f.get(60, TimeUnit.SECONDS);
                System.out.println("{\"partition\":" + md.partition() + ",\"offset\":" + md.offset()
                        + ",\"timestamp\":" + md.timestamp() + "}");
            }
        }
    }

    static void partitionFor(int partitions, List<String> keys) {
        for (String k : keys) {
            byte[] b = k.getBytes(StandardCharsets.UTF_8);
            System.out.println(k + " " + Utils.murmur2(b) + " " + BuiltInPartitioner.partitionForKey(b, partitions));
        }
    }
}
