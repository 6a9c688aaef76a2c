package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.OffsetOutOfRangeException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** KafkaConsumer without group rebalancing: seek, offsetsForTimes, pause/resume, commits. */
class ConsumerTest extends BrokerTest {

    static void produce(Clients c, String topic, int partition, int n, Long baseTimestamp)
            throws Exception {
        KafkaProducer<String, String> producer = c.producer(Map.of());
        for (int i = 0; i < n; i++) {
            Long ts = baseTimestamp == null ? null : baseTimestamp + i * 1000L;
            producer.send(new ProducerRecord<>(topic, partition, ts, "k" + i, "p" + partition
                    + "-" + i));
        }
        producer.flush();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void seekToOffsetBeginningAndEnd(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("seek", 1);
            produce(c, topic, 0, 50, null);
            TopicPartition tp = new TopicPartition(topic, 0);
            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            consumer.assign(List.of(tp));

            consumer.seek(tp, 20);
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 30);
            for (int i = 0; i < 30; i++) {
                assertEquals(20 + i, got.get(i).offset());
                assertEquals("p0-" + (20 + i), got.get(i).value());
            }
            assertEquals(50, consumer.position(tp));

            consumer.seekToBeginning(List.of(tp));
            assertEquals(0, consumer.position(tp));
            assertEquals("p0-0", Clients.poll(consumer, 50).get(0).value());

            consumer.seekToEnd(List.of(tp));
            assertEquals(50, consumer.position(tp));
            assertTrue(consumer.poll(Duration.ofMillis(300)).isEmpty());

            consumer.seek(tp, 49);
            ConsumerRecord<String, String> last = Clients.poll(consumer, 1).get(0);
            assertEquals(49, last.offset());
            assertEquals(Map.of(tp, 0L), consumer.beginningOffsets(List.of(tp)));
            assertEquals(Map.of(tp, 50L), consumer.endOffsets(List.of(tp)));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void fetchPastTheEndFollowsAutoOffsetReset(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("reset", 1);
            produce(c, topic, 0, 20, null);
            TopicPartition tp = new TopicPartition(topic, 0);

            KafkaConsumer<String, String> none = c.consumer(null,
                    Map.of(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none"));
            none.assign(List.of(tp));
            none.seek(tp, 100);
            OffsetOutOfRangeException err = assertThrows(OffsetOutOfRangeException.class, () -> {
                long deadline = System.nanoTime() + Clients.DEADLINE.toNanos();
                while (System.nanoTime() < deadline) {
                    none.poll(Duration.ofMillis(200));
                }
            });
            assertEquals(Map.of(tp, 100L), err.offsetOutOfRangePartitions());

            KafkaConsumer<String, String> latest = c.consumer(null,
                    Map.of(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest"));
            latest.assign(List.of(tp));
            latest.seek(tp, 100);
            Clients.waitFor("the position reset to the end", () -> {
                latest.poll(Duration.ofMillis(100));
                return latest.position(tp) == 20;
            });

            KafkaConsumer<String, String> earliest = c.consumer(null, Map.of());
            earliest.assign(List.of(tp));
            earliest.seek(tp, 100);
            assertEquals(0, Clients.poll(earliest, 20).get(0).offset());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void readCommittedMetadataAndMaxPollRecords(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("read-committed", 2);
            produce(c, topic, 1, 25, null);
            TopicPartition tp = new TopicPartition(topic, 1);
            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of(
                    ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                    ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10));

            List<PartitionInfo> parts = consumer.partitionsFor(topic);
            assertEquals(2, parts.size());
            for (PartitionInfo pi : parts) {
                assertNotNull(pi.leader());
                assertEquals(1, pi.replicas().length);
                assertEquals(pi.leader(), pi.inSyncReplicas()[0]);
            }
            assertTrue(consumer.listTopics().containsKey(topic));

            // Without transactions the last stable offset is the high watermark.
            assertEquals(Map.of(tp, 25L), consumer.endOffsets(List.of(tp)));
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            Clients.waitFor("25 records, at most 10 a poll", () -> {
                var batch = consumer.poll(Duration.ofMillis(200));
                assertTrue(batch.count() <= 10, "max.poll.records=10, got " + batch.count());
                batch.forEach(got::add);
                return got.size() >= 25;
            });
            assertEquals(25, got.size());
            for (int i = 0; i < 25; i++) {
                assertEquals(i, got.get(i).offset());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void offsetsForTimesFindsTheFirstRecordAtOrAfter(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("times", 1);
            long base = System.currentTimeMillis() - 60_000;
            produce(c, topic, 0, 10, base); // timestamps base, base+1s, ..., base+9s
            TopicPartition tp = new TopicPartition(topic, 0);
            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());

            Map<TopicPartition, OffsetAndTimestamp> found =
                    consumer.offsetsForTimes(Map.of(tp, base + 3500));
            assertEquals(4, found.get(tp).offset());
            assertEquals(base + 4000, found.get(tp).timestamp());

            found = consumer.offsetsForTimes(Map.of(tp, base + 3000));
            assertEquals(3, found.get(tp).offset());
            assertEquals(base + 3000, found.get(tp).timestamp());

            found = consumer.offsetsForTimes(Map.of(tp, 0L));
            assertEquals(0, found.get(tp).offset());

            found = consumer.offsetsForTimes(Map.of(tp, base + 10_000));
            assertTrue(found.containsKey(tp));
            assertNull(found.get(tp), "no record at or after the last timestamp");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void pausedPartitionsAreNotFetchedUntilResumed(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("pause", 2);
            produce(c, topic, 0, 10, null);
            produce(c, topic, 1, 10, null);
            TopicPartition p0 = new TopicPartition(topic, 0);
            TopicPartition p1 = new TopicPartition(topic, 1);
            KafkaConsumer<String, String> consumer = c.consumer(null, Map.of());
            consumer.assign(List.of(p0, p1));
            consumer.seekToBeginning(List.of(p0, p1));
            consumer.pause(List.of(p1));
            assertEquals(Set.of(p1), consumer.paused());

            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 10);
            assertTrue(got.stream().allMatch(r -> r.partition() == 0), "only p0 while p1 paused");
            // p0 is drained; further polls must stay empty while p1 is paused.
            for (int i = 0; i < 3; i++) {
                assertTrue(consumer.poll(Duration.ofMillis(200)).isEmpty());
            }
            assertEquals(0, consumer.position(p1));

            consumer.resume(List.of(p1));
            assertTrue(consumer.paused().isEmpty());
            got = Clients.poll(consumer, 10);
            for (int i = 0; i < 10; i++) {
                assertEquals(1, got.get(i).partition());
                assertEquals(i, got.get(i).offset());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void commitSyncAndCommittedWithMetadata(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("commit", 2);
            produce(c, topic, 0, 50, null);
            produce(c, topic, 1, 5, null);
            String group = Clients.name("commit-group");
            TopicPartition p0 = new TopicPartition(topic, 0);
            TopicPartition p1 = new TopicPartition(topic, 1);

            KafkaConsumer<String, String> first = c.consumer(group, Map.of());
            first.assign(List.of(p0, p1));
            Map<TopicPartition, OffsetAndMetadata> none = new HashMap<>();
            none.put(p0, null);
            none.put(p1, null);
            assertEquals(none, first.committed(Set.of(p0, p1)));

            first.commitSync(Map.of(p0, new OffsetAndMetadata(30, "thirty")));
            Map<TopicPartition, OffsetAndMetadata> committed = first.committed(Set.of(p0, p1));
            assertEquals(30, committed.get(p0).offset());
            assertEquals("thirty", committed.get(p0).metadata());
            assertNull(committed.get(p1));

            // commitSync() with no arguments commits the consumed positions.
            first.seek(p0, 30);
            first.seekToBeginning(List.of(p1));
            Clients.poll(first, 25);
            first.commitSync();
            committed = first.committed(Set.of(p0, p1));
            assertEquals(50, committed.get(p0).offset());
            assertEquals(5, committed.get(p1).offset());
            first.close(Duration.ofSeconds(10));

            first = c.consumer(group, Map.of());
            first.commitSync(Map.of(p0, new OffsetAndMetadata(40)));
            first.close(Duration.ofSeconds(10));

            // A new consumer of the group starts at the committed offsets.
            produce(c, topic, 1, 3, null);
            KafkaConsumer<String, String> second = c.consumer(group, Map.of());
            second.assign(List.of(p0, p1));
            List<ConsumerRecord<String, String>> got = Clients.poll(second, 13);
            List<Long> p0Offsets = new ArrayList<>();
            List<Long> p1Offsets = new ArrayList<>();
            for (ConsumerRecord<String, String> r : got) {
                (r.partition() == 0 ? p0Offsets : p1Offsets).add(r.offset());
            }
            assertEquals(List.of(40L, 41L, 42L, 43L, 44L, 45L, 46L, 47L, 48L, 49L), p0Offsets);
            assertEquals(List.of(5L, 6L, 7L), p1Offsets);
            OffsetAndMetadata p0Committed = second.committed(Set.of(p0)).get(p0);
            assertNotNull(p0Committed);
            assertEquals(40, p0Committed.offset());
            assertEquals("", p0Committed.metadata());
        }
    }
}
