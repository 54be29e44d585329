import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Java half of tests/interop/test_transactions.py's exactly-once loop: Apache Kafka's own
 * KafkaConsumer (read_committed, classic group, no auto-commit) and transactional KafkaProducer.
 * For every non-empty poll one transaction: begin, send transform(value) to the same partition
 * of OUT, sendOffsetsToTransaction(next offsets, consumer.groupMetadata()), commit.
 * transform(v) = v.toUpperCase() + "|eos-java".
 *
 * <pre>
 * java -cp 'lib/*:build' TxnLoop BOOTSTRAP IN OUT GROUP TXID [K:PHASE]
 *     K:PHASE  stop in this process's K-th transaction at PHASE and sleep until killed:
 *              produced (records sent and flushed, transaction open) | offsets (offsets sent
 *              too) | committed (right after the commit)
 *     stdout, one JSON object per line:
 *       {"ready":true}                               after initTransactions
 *       {"assigned":[p,...]} / {"revoked":[p,...]}   rebalance listener calls
 *       {"txn":k,"phase":"committed","n":records,"positions":{"p":offset,...}}
 *       {"holding":k,"phase":PHASE}                  then sleeps until killed
 *       {"aborted":k,"error":CLASS}                  abortable error: aborted, rewound to committed
 *       {"fatal":CLASS,"message":TEXT}               exit 2
 * </pre>
 *
 * Exit codes: 2 a fatal exception, 3 the time limit (RUNNEL_JAVA_DEADLINE_S, default 180 s).
 */
public class TxnLoop {
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

    static String partitions(java.util.Collection<TopicPartition> tps) {
        java.util.TreeSet<Integer> s = new java.util.TreeSet<>();
        for (TopicPartition tp : tps) s.add(tp.partition());
        return s.toString().replace(" ", "");
    }

    static String transform(String v) {
        return v.toUpperCase(Locale.ROOT) + "|eos-java";
    }

    static void hold(int k, String phase) throws InterruptedException {
        emit("{\"holding\":" + k + ",\"phase\":" + jsonString(phase) + "}");
        while (true) Thread.sleep(1000);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: TxnLoop BOOTSTRAP IN OUT GROUP TXID [K:PHASE]");
            System.exit(64);
        }
        long deadline = Long.parseLong(System.getenv().getOrDefault("RUNNEL_JAVA_DEADLINE_S", "180"));
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(deadline * 1000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("TIMEOUT: TxnLoop did not finish within " + deadline + " s");
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        String bootstrap = args[0], in = args[1], out = args[2], group = args[3], txid = args[4];
        int holdK = -1;
        String holdPhase = "";
        if (args.length > 5) {
            String[] kp = args[5].split(":", 2);
            holdK = Integer.parseInt(kp[0]);
            holdPhase = kp[1];
        }

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "3000");
        cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());

        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txid);
        pp.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "30000");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());

        KafkaProducer<String, String> producer = new KafkaProducer<>(pp);
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp);
        try {
            // Fences a previous incarnation with this transactional.id and aborts its open transaction.
            producer.initTransactions();
            emit("{\"ready\":true}");
            consumer.subscribe(List.of(in), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(java.util.Collection<TopicPartition> ps) {
                    emit("{\"revoked\":" + partitions(ps) + "}");
                }

                @Override
                public void onPartitionsAssigned(java.util.Collection<TopicPartition> ps) {
                    emit("{\"assigned\":" + partitions(ps) + "}");
                }
            });
            int k = 0;
            while (true) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) continue;
                k++;
                try {
                    producer.beginTransaction();
                    Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                    for (ConsumerRecord<String, String> r : records) {
                        producer.send(new ProducerRecord<>(out, r.partition(), r.key(), transform(r.value())));
                        next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    }
                    if (k == holdK && holdPhase.equals("produced")) {
                        producer.flush();
                        hold(k, holdPhase);
                    }
                    producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                    if (k == holdK && holdPhase.equals("offsets")) hold(k, holdPhase);
                    producer.commitTransaction();
                } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException
                         | UnsupportedVersionException e) {
                    throw e; // fatal for this producer
                } catch (KafkaException e) {
                    producer.abortTransaction();
                    Set<TopicPartition> assigned = consumer.assignment();
                    Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned, Duration.ofSeconds(30));
                    for (TopicPartition tp : assigned) {
                        OffsetAndMetadata om = committed.get(tp);
                        if (om == null) consumer.seekToBeginning(List.of(tp));
                        else consumer.seek(tp, om.offset());
                    }
                    emit("{\"aborted\":" + k + ",\"error\":" + jsonString(e.getClass().getName()) + "}");
                    continue;
                }
                StringBuilder pos = new StringBuilder("{");
                TreeMap<Integer, Long> sorted = new TreeMap<>();
                for (TopicPartition tp : consumer.assignment()) {
                    sorted.put(tp.partition(), consumer.position(tp, Duration.ofSeconds(30)));
                }
                for (Map.Entry<Integer, Long> e : sorted.entrySet()) {
                    if (pos.length() > 1) pos.append(',');
                    pos.append('"').append(e.getKey()).append("\":").append(e.getValue());
                }
                pos.append('}');
                emit("{\"txn\":" + k + ",\"phase\":\"committed\",\"n\":" + records.count() + ",\"positions\":" + pos + "}");
                if (k == holdK && holdPhase.equals("committed")) hold(k, holdPhase);
            }
        } catch (Exception e) {
            emit("{\"fatal\":" + jsonString(e.getClass().getName()) + ",\"message\":" + jsonString(String.valueOf(e.getMessage())) + "}");
            System.exit(2);
        }
    }
}
