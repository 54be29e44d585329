import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.StickyAssignor;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A classic-protocol group member for tests/interop/test_groups_clients.py: Apache Kafka's own
 * KafkaConsumer subscribes to TOPIC in GROUP and commits each record synchronously before
 * printing it, so every printed record is committed.
 *
 * <pre>
 * java -cp 'lib/*:build' GroupMember BOOTSTRAP GROUP TOPIC STRATEGY [consumer.config=value]...
 *     STRATEGY: range | roundrobin | sticky | cooperative-sticky
 *     stdin: a line "close" closes the consumer gracefully (LeaveGroup) and exits 0.
 *     stdout, one JSON object per line:
 *       {"assigned":[p,...]}            the whole assignment, whenever it changed
 *       {"rebalance":"assigned|revoked|lost","partitions":[p,...]}   listener calls
 *       {"record":[partition,offset,value]}   after its offset was committed
 *       {"commit_failed":[partition,offset],"error":CLASS}   (seeks back; not printed as a record)
 *       {"error":CLASS,"message":TEXT}  a fatal exception from poll(): exit 2
 *       {"closed":true}                 after close()
 * </pre>
 *
 * Exit codes: 0 closed, 2 an exception, 3 the time limit (RUNNEL_JAVA_DEADLINE_S, default 120 s).
 */
public class GroupMember {
    static synchronized void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }

    static String jsonString(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
                }
            }
        }
        return b.append('"').toString();
    }

    static String parts(Collection<TopicPartition> tps) {
        TreeSet<Integer> s = new TreeSet<>();
        for (TopicPartition tp : tps) s.add(tp.partition());
        return s.toString().replace(" ", "");
    }

    static String assignor(String name) {
        return switch (name) {
            case "range" -> RangeAssignor.class.getName();
            case "roundrobin" -> RoundRobinAssignor.class.getName();
            case "sticky" -> StickyAssignor.class.getName();
            case "cooperative-sticky" -> CooperativeStickyAssignor.class.getName();
            default -> throw new IllegalArgumentException("unknown strategy " + name);
        };
    }

    public static void main(String[] args) {
        if (args.length < 4) {
            System.err.println("usage: GroupMember BOOTSTRAP GROUP TOPIC STRATEGY [k=v]...");
            System.exit(64);
        }
        long deadline = Long.parseLong(System.getenv().getOrDefault("RUNNEL_JAVA_DEADLINE_S", "120"));
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(deadline * 1000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("TIMEOUT: GroupMember did not finish within " + deadline + " s");
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, args[1]);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor(args[3]));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        for (int i = 4; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            p.put(kv[0], kv[1]);
        }
        String topic = args[2];

        AtomicBoolean closeRequested = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.trim().equals("close")) {
                        closeRequested.set(true);
                        return;
                    }
                }
            } catch (Exception e) {
                // stdin gone: keep running until killed
            }
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();

        KafkaConsumer<String, String> c = new KafkaConsumer<>(p);
        try {
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    emit("{\"rebalance\":\"revoked\",\"partitions\":" + parts(partitions) + "}");
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    emit("{\"rebalance\":\"assigned\",\"partitions\":" + parts(partitions) + "}");
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    emit("{\"rebalance\":\"lost\",\"partitions\":" + parts(partitions) + "}");
                }
            });
            Set<TopicPartition> last = null;
            while (!closeRequested.get()) {
                ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(100));
                Set<TopicPartition> now = c.assignment();
                if (last == null || !now.equals(last)) {
                    last = Set.copyOf(now);
                    emit("{\"assigned\":" + parts(now) + "}");
                }
                for (TopicPartition tp : records.partitions()) {
                    for (ConsumerRecord<String, String> r : records.records(tp)) {
                        try {
                            c.commitSync(Map.of(tp, new OffsetAndMetadata(r.offset() + 1)));
                        } catch (KafkaException e) {
                            // Not committed: read it again (if the partition is still ours).
                            emit("{\"commit_failed\":[" + tp.partition() + "," + r.offset() + "],\"error\":"
                                    + jsonString(e.getClass().getName()) + "}");
                            try {
                                c.seek(tp, r.offset());
                            } catch (IllegalStateException notOurs) {
                                // revoked meanwhile: its new owner reads from the committed offset
                            }
                            break;
                        }
                        emit("{\"record\":[" + tp.partition() + "," + r.offset() + "," + jsonString(r.value()) + "]}");
                    }
                }
            }
            c.close(Duration.ofSeconds(30));
            emit("{\"closed\":true}");
            System.exit(0);
        } catch (Exception e) {
            emit("{\"error\":" + jsonString(e.getClass().getName()) + ",\"message\":" + jsonString(String.valueOf(e.getMessage())) + "}");
            try {
                c.close(Duration.ofSeconds(5));
            } catch (Exception ignored) {
                // already failing
            }
            System.exit(2);
        }
    }
}
