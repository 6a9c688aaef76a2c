package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.errors.InvalidTimestampException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** KafkaProducer: idempotence, every codec, headers, batches near the request size limit. */
class ProducerTest extends BrokerTest {

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void idempotentProducerGetsConsecutiveOffsetsInOrder(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("idem", 1);
            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                    ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5,
                    ProducerConfig.LINGER_MS_CONFIG, 5,
                    ProducerConfig.BATCH_SIZE_CONFIG, 2048));
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < 500; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, "k" + i, "v" + i)));
            }
            producer.flush();
            for (int i = 0; i < sent.size(); i++) {
                RecordMetadata md = sent.get(i).get();
                assertEquals(0, md.partition());
                assertEquals(i, md.offset(), "offset of record " + i);
            }

            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 500);
            for (int i = 0; i < got.size(); i++) {
                assertEquals(i, got.get(i).offset());
                assertEquals("k" + i, got.get(i).key());
                assertEquals("v" + i, got.get(i).value());
            }
            assertEquals(500L, consumer.endOffsets(List.of(tp)).get(tp));
        }
    }

    Stream<Arguments> targetsAndCodecs() {
        return targets().flatMap(t -> Stream.of("gzip", "snappy", "lz4", "zstd")
                .map(codec -> Arguments.of(t, codec)));
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("targetsAndCodecs")
    void compressedBatchesRoundTrip(Target t, String codec) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("codec-" + codec, 2);
            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                    ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true,
                    ProducerConfig.LINGER_MS_CONFIG, 20,
                    ProducerConfig.BATCH_SIZE_CONFIG, 65536));
            int n = 1000;
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                String value = codec + " value " + i + " " + "abcdefgh".repeat(i % 20);
                sent.add(producer.send(new ProducerRecord<>(topic, i % 2, "key-" + i, value)));
            }
            producer.flush();
            long[] next = new long[2];
            for (int i = 0; i < n; i++) {
                RecordMetadata md = sent.get(i).get();
                assertEquals(i % 2, md.partition());
                assertEquals(next[i % 2]++, md.offset(), "offset of record " + i);
            }

            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0),
                    new TopicPartition(topic, 1));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, n);
            long[] expectOffset = new long[2];
            int[] seen = new int[2];
            for (ConsumerRecord<String, String> r : got) {
                int p = r.partition();
                assertEquals(expectOffset[p]++, r.offset());
                int i = 2 * seen[p]++ + p;
                assertEquals("key-" + i, r.key());
                assertEquals(codec + " value " + i + " " + "abcdefgh".repeat(i % 20), r.value());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void headersKeepOrderRepeatedKeysAndNullValues(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("headers", 1);
            KafkaProducer<String, String> producer = c.producer(Map.of());
            List<Header> headers = List.of(
                    new RecordHeader("trace", "a".getBytes(StandardCharsets.UTF_8)),
                    new RecordHeader("only-once", "x".getBytes(StandardCharsets.UTF_8)),
                    new RecordHeader("trace", "b".getBytes(StandardCharsets.UTF_8)),
                    new RecordHeader("empty", new byte[0]),
                    new RecordHeader("null-value", (byte[]) null),
                    new RecordHeader("trace", "c".getBytes(StandardCharsets.UTF_8)));
            producer.send(new ProducerRecord<>(topic, 0, (String) null, "with-headers", headers)).get();
            producer.send(new ProducerRecord<>(topic, 0, "k", "no-headers")).get();

            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 2);
            ConsumerRecord<String, String> r = got.get(0);
            assertNull(r.key());
            assertEquals("with-headers", r.value());
            Header[] back = r.headers().toArray();
            assertEquals(headers.size(), back.length);
            for (int i = 0; i < back.length; i++) {
                assertEquals(headers.get(i).key(), back[i].key(), "header " + i + " key");
                if (headers.get(i).value() == null) {
                    assertNull(back[i].value(), "header " + i + " value");
                } else {
                    assertArrayEquals(headers.get(i).value(), back[i].value(),
                            "header " + i + " value");
                }
            }
            List<String> traces = new ArrayList<>();
            r.headers().headers("trace").forEach(
                    h -> traces.add(new String(h.value(), StandardCharsets.UTF_8)));
            assertEquals(List.of("a", "b", "c"), traces);
            assertEquals("c", new String(r.headers().lastHeader("trace").value(),
                    StandardCharsets.UTF_8));
            assertEquals(0, got.get(1).headers().toArray().length);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void batchesNearMaxRequestSizeAndTheMessageSizeLimit(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("large", 1);
            // ~4 MB in 1000-byte records, batched close to the default max.request.size (1 MiB).
            KafkaProducer<byte[], byte[]> producer = c.bytesProducer(Map.of(
                    ProducerConfig.BATCH_SIZE_CONFIG, 1_000_000,
                    ProducerConfig.LINGER_MS_CONFIG, 200,
                    ProducerConfig.BUFFER_MEMORY_CONFIG, 16_000_000L,
                    ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 1_048_576));
            int n = 4000;
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, 0, null, payload(i, 1000))));
            }
            // One record of ~1 MB: within message.max.bytes (1048588) once framed.
            sent.add(producer.send(new ProducerRecord<>(topic, 0, null, payload(n, 1_040_000))));
            producer.flush();
            for (int i = 0; i <= n; i++) {
                assertEquals(i, sent.get(i).get().offset(), "offset of record " + i);
            }

            KafkaConsumer<byte[], byte[]> consumer = c.bytesConsumer(Map.of(
                    ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 1_048_576));
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.poll(consumer, n + 1);
            for (int i = 0; i <= n; i++) {
                assertEquals(i, got.get(i).offset());
                assertTrue(Arrays.equals(payload(i, i == n ? 1_040_000 : 1000),
                        got.get(i).value()), "value of record " + i);
            }

            // A batch over the broker's message.max.bytes is refused by the broker (the
            // producer's own max.request.size is raised so that the broker decides).
            KafkaProducer<byte[], byte[]> big = c.bytesProducer(Map.of(
                    ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 4_000_000,
                    ProducerConfig.BUFFER_MEMORY_CONFIG, 16_000_000L,
                    ProducerConfig.RETRIES_CONFIG, 0,
                    ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false,
                    ProducerConfig.ACKS_CONFIG, "1"));
            Throwable err = Clients.failure(
                    big.send(new ProducerRecord<>(topic, 0, null, payload(0, 1_200_000))));
            assertInstanceOf(RecordTooLargeException.class, err);
            assertEquals(n + 1L, consumer.endOffsets(List.of(tp)).get(tp));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void logAppendTimeAndTimestampLimits(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String appendTime = c.topic("append-time", 1,
                    Map.of("message.timestamp.type", "LogAppendTime"));
            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.RETRIES_CONFIG, 0));
            long before = System.currentTimeMillis();
            RecordMetadata md = producer.send(
                    new ProducerRecord<>(appendTime, 0, 1_000L, "k", "v")).get();
            long after = System.currentTimeMillis();
            assertTrue(md.timestamp() >= before - 1000 && md.timestamp() <= after + 1000,
                    "the broker's append time is returned: " + md.timestamp());

            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            TopicPartition tp = new TopicPartition(appendTime, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            ConsumerRecord<String, String> r = Clients.poll(consumer, 1).get(0);
            assertEquals(TimestampType.LOG_APPEND_TIME, r.timestampType());
            assertEquals(md.timestamp(), r.timestamp());

            // CreateTime more than message.timestamp.after.max.ms (1 h) ahead is refused.
            String createTime = c.topic("create-time", 1);
            long future = System.currentTimeMillis() + 2 * 3_600_000L;
            assertInstanceOf(InvalidTimestampException.class, Clients.failure(producer.send(
                    new ProducerRecord<>(createTime, 0, future, "k", "future"))));
            long past = System.currentTimeMillis() - 30L * 24 * 3_600_000L;
            assertEquals(past, producer.send(
                    new ProducerRecord<>(createTime, 0, past, "k", "past")).get().timestamp());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void acksZeroReportsNoOffsetsButStores(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("acks0", 1);
            KafkaProducer<String, String> fireAndForget = c.producer(Map.of(
                    ProducerConfig.ACKS_CONFIG, "0",
                    ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false));
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                sent.add(fireAndForget.send(new ProducerRecord<>(topic, 0, "k", "v" + i)));
            }
            fireAndForget.flush();
            for (Future<RecordMetadata> f : sent) {
                assertEquals(-1, f.get().offset(), "acks=0 reports no offset");
            }
            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            TopicPartition tp = new TopicPartition(topic, 0);
            Clients.waitFor("10 records stored",
                    () -> consumer.endOffsets(List.of(tp)).get(tp) == 10L);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void compactedTopicsRefuseRecordsWithoutKeys(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String compacted = c.topic("compacted", 1, Map.of("cleanup.policy", "compact"));
            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.RETRIES_CONFIG, 0));
            assertInstanceOf(InvalidRecordException.class, Clients.failure(producer.send(
                    new ProducerRecord<>(compacted, 0, null, "no key"))));
            assertEquals(0, producer.send(new ProducerRecord<>(compacted, 0, "key", "keyed"))
                    .get().offset());
        }
    }

    static byte[] payload(int i, int size) {
        byte[] b = new byte[size];
        for (int j = 0; j < size; j++) {
            b[j] = (byte) (i * 31 + j * 7);
        }
        return b;
    }
}
