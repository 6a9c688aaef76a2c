package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A Kafka Streams application with {@code processing.guarantee=exactly_once_v2}: a stateless
 * map and a count per key (a state store with a compacted changelog topic), each output read
 * back with read_committed. Exercises transactions (InitProducerId with a transactional id,
 * AddPartitionsToTxn, TxnOffsetCommit, EndTxn, markers), read_committed fetches and the
 * internal topics Streams creates.
 */
class StreamsTest extends BrokerTest {

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void exactlyOnceV2MapAndCount(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String input = c.topic("streams-in", 2);
            String mapped = c.topic("streams-mapped", 2);
            String counts = c.topic("streams-counts", 2);
            int perKey = 50;
            int keys = 8;
            KafkaProducer<String, String> producer = c.producer(Map.of());
            for (int i = 0; i < perKey * keys; i++) {
                producer.send(new ProducerRecord<>(input, "k" + (i % keys), "v" + i));
            }
            producer.flush();

            StreamsBuilder builder = new StreamsBuilder();
            KStream<String, String> in = builder.stream(input,
                    Consumed.with(Serdes.String(), Serdes.String()));
            in.mapValues(v -> v.toUpperCase()).to(mapped,
                    Produced.with(Serdes.String(), Serdes.String()));
            in.groupByKey().count().toStream().mapValues(n -> Long.toString(n))
                    .to(counts, Produced.with(Serdes.String(), Serdes.String()));

            Path stateDir = Files.createTempDirectory("skein-streams");
            Properties props = new Properties();
            props.put(StreamsConfig.APPLICATION_ID_CONFIG, Clients.name("eos-app"));
            props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, c.bootstrap());
            props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
            props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
            props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
            props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
            props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
            props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
            KafkaStreams streams = new KafkaStreams(builder.build(), props);
            try {
                streams.start();
                List<ConsumerRecord<String, String>> out = readCommitted(c, mapped, perKey * keys);
                Map<String, List<String>> byKey = new HashMap<>();
                out.forEach(r -> byKey.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value()));
                for (int k = 0; k < keys; k++) {
                    List<String> expected = new ArrayList<>();
                    for (int i = k; i < perKey * keys; i += keys) {
                        expected.add("V" + i);
                    }
                    assertEquals(expected, byKey.get("k" + k), "mapped values of k" + k + " in order");
                }
                // Without a cache every input gives one count update: the last per key is perKey.
                List<ConsumerRecord<String, String>> updates = readCommitted(c, counts, perKey * keys);
                Map<String, String> last = new TreeMap<>();
                updates.forEach(r -> last.put(r.key(), r.value()));
                Map<String, String> expected = new TreeMap<>();
                for (int k = 0; k < keys; k++) {
                    expected.put("k" + k, Integer.toString(perKey));
                }
                assertEquals(expected, last);
            } finally {
                streams.close(Duration.ofSeconds(30));
                streams.cleanUp();
            }
        }
    }

    /** Reads {@code count} records of both partitions with read_committed (fails on more). */
    private static List<ConsumerRecord<String, String>> readCommitted(Clients c, String topic, int count) {
        KafkaConsumer<String, String> consumer = c.consumer(null, Map.of("isolation.level", "read_committed"));
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        consumer.assign(tps);
        consumer.seekToBeginning(tps);
        List<ConsumerRecord<String, String>> got = Clients.poll(consumer, count);
        return got.stream().sorted((a, b) -> a.partition() != b.partition()
                ? Integer.compare(a.partition(), b.partition())
                : Long.compare(a.offset(), b.offset())).collect(Collectors.toList());
    }
}
