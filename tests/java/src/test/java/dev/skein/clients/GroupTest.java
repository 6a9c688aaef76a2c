package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.BooleanSupplier;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Consumer groups through subscribe(): the classic protocol with the eager range and the
 * cooperative-sticky assignors, static membership, and KIP-848 (group.protocol=consumer).
 */
class GroupTest extends BrokerTest {

    /** A subscribed consumer and what its rebalance listener saw. */
    static final class Member implements ConsumerRebalanceListener {
        final KafkaConsumer<String, String> consumer;
        final List<Set<TopicPartition>> revoked = new ArrayList<>();
        final List<Set<TopicPartition>> assigned = new ArrayList<>();
        final Map<TopicPartition, List<Long>> records = new HashMap<>();

        Member(Clients c, String group, String topic, Map<String, Object> conf) {
            consumer = c.consumer(group, conf);
            consumer.subscribe(List.of(topic), this);
        }

        Member(Clients c, String group, Pattern pattern, Map<String, Object> conf) {
            consumer = c.consumer(group, conf);
            consumer.subscribe(pattern, this);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            revoked.add(new HashSet<>(partitions));
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            assigned.add(new HashSet<>(partitions));
        }

        void poll() {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                records.computeIfAbsent(new TopicPartition(r.topic(), r.partition()),
                        k -> new ArrayList<>()).add(r.offset());
            }
        }

        Set<TopicPartition> assignment() {
            return consumer.assignment();
        }

        int consumed() {
            return records.values().stream().mapToInt(List::size).sum();
        }
    }

    static Map<String, Object> classic(Class<?> assignor) {
        return Map.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.getName(),
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500,
                ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, 60000);
    }

    static Map<String, Object> kip848() {
        return Map.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
    }

    /** Polls every member in turn until the condition holds. */
    static void pollUntil(String what, BooleanSupplier done, Member... members) {
        Clients.waitFor(what, () -> {
            for (Member m : members) {
                m.poll();
            }
            return done.getAsBoolean();
        });
    }

    static Set<TopicPartition> partitions(String topic, int n) {
        Set<TopicPartition> all = new HashSet<>();
        for (int i = 0; i < n; i++) {
            all.add(new TopicPartition(topic, i));
        }
        return all;
    }

    static boolean splitBetween(Set<TopicPartition> all, Member a, Member b) {
        Set<TopicPartition> x = a.assignment();
        Set<TopicPartition> y = b.assignment();
        Set<TopicPartition> union = new HashSet<>(x);
        union.addAll(y);
        return !x.isEmpty() && !y.isEmpty() && x.size() + y.size() == all.size()
                && union.equals(all);
    }

    /** Produces {@code perPartition} records to each partition; every one must be consumed. */
    static void produceAll(Clients c, String topic, int partitions, int perPartition)
            throws Exception {
        KafkaProducer<String, String> producer = c.producer(Map.of());
        for (int p = 0; p < partitions; p++) {
            for (int i = 0; i < perPartition; i++) {
                producer.send(new ProducerRecord<>(topic, p, "k", "v" + i));
            }
        }
        producer.flush();
    }

    static void assertEachPartitionReadOnceInOrder(String topic, int partitions, int perPartition,
                                                   Member... members) {
        Map<TopicPartition, List<Long>> all = new HashMap<>();
        for (Member m : members) {
            m.records.forEach((tp, offsets) -> {
                assertFalse(all.containsKey(tp), tp + " read by two members");
                all.put(tp, offsets);
            });
        }
        List<Long> expect = new ArrayList<>();
        for (long i = 0; i < perPartition; i++) {
            expect.add(i);
        }
        for (TopicPartition tp : partitions(topic, partitions)) {
            assertEquals(expect, all.get(tp), "offsets read from " + tp);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void classicEagerRangeRebalanceSplitsAndRevokesEverything(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("range", 3);
            String group = Clients.name("range-group");
            Set<TopicPartition> all = partitions(topic, 3);

            Member a = new Member(c, group, topic, classic(RangeAssignor.class));
            pollUntil("the first member owning all 3 partitions",
                    () -> a.assignment().equals(all), a);
            int generation = a.consumer.groupMetadata().generationId();

            Member b = new Member(c, group, topic, classic(RangeAssignor.class));
            pollUntil("the partitions split between two members",
                    () -> splitBetween(all, a, b), a, b);
            assertTrue(a.consumer.groupMetadata().generationId() > generation,
                    "a rebalance starts a new generation");
            assertEquals(Set.of(1, 2), Set.of(a.assignment().size(), b.assignment().size()));
            // Eager: the first member gave up everything it had before the new assignment.
            assertTrue(a.revoked.contains(all), "eager revocation of all 3: " + a.revoked);

            produceAll(c, topic, 3, 10);
            pollUntil("30 records read", () -> a.consumed() + b.consumed() == 30, a, b);
            assertEachPartitionReadOnceInOrder(topic, 3, 10, a, b);
            for (Member m : List.of(a, b)) {
                for (TopicPartition tp : m.records.keySet()) {
                    assertTrue(m.assignment().contains(tp), "read only assigned partitions");
                }
            }

            ConsumerGroupDescription d = c.admin().describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            assertEquals(GroupType.CLASSIC, d.type());
            assertEquals(GroupState.STABLE, d.groupState());
            assertEquals("range", d.partitionAssignor());
            assertEquals(2, d.members().size());

            b.consumer.close(Duration.ofSeconds(10));
            pollUntil("the first member owning all 3 again after the second left",
                    () -> a.assignment().equals(all), a);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void cooperativeStickyMovesOnlyWhatItMust(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("coop", 4);
            String group = Clients.name("coop-group");
            Set<TopicPartition> all = partitions(topic, 4);

            Member a = new Member(c, group, topic, classic(CooperativeStickyAssignor.class));
            pollUntil("the first member owning all 4 partitions",
                    () -> a.assignment().equals(all), a);
            Member b = new Member(c, group, topic, classic(CooperativeStickyAssignor.class));
            pollUntil("the partitions split 2 and 2",
                    () -> splitBetween(all, a, b) && a.assignment().size() == 2, a, b);

            Set<TopicPartition> moved = b.assignment();
            Set<TopicPartition> revokedFromA = new HashSet<>();
            a.revoked.forEach(revokedFromA::addAll);
            // Cooperative: only the partitions that moved were revoked; a kept the others.
            assertEquals(moved, revokedFromA);
            assertTrue(all.containsAll(a.assignment()));
            for (TopicPartition kept : a.assignment()) {
                assertFalse(revokedFromA.contains(kept), kept + " should not be revoked");
            }
            assertTrue(b.revoked.stream().allMatch(Set::isEmpty), "b lost nothing");

            produceAll(c, topic, 4, 5);
            pollUntil("20 records read", () -> a.consumed() + b.consumed() == 20, a, b);
            assertEachPartitionReadOnceInOrder(topic, 4, 5, a, b);

            ConsumerGroupDescription d = c.admin().describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            assertEquals("cooperative-sticky", d.partitionAssignor());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void staticMemberRejoinsWithoutARebalance(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("static", 2);
            String group = Clients.name("static-group");
            Set<TopicPartition> all = partitions(topic, 2);
            Map<String, Object> conf = new HashMap<>(classic(RangeAssignor.class));
            conf.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-a");

            Member a = new Member(c, group, topic, conf);
            pollUntil("the static member owning both partitions",
                    () -> a.assignment().equals(all), a);
            int generation = a.consumer.groupMetadata().generationId();
            String memberId = a.consumer.groupMetadata().memberId();

            ConsumerGroupDescription d = c.admin().describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            assertEquals(1, d.members().size());
            MemberDescription m = d.members().iterator().next();
            assertEquals("instance-a", m.groupInstanceId().orElse(null));
            assertEquals(memberId, m.consumerId());

            // A static member's close does not leave the group; the same instance id coming
            // back within the session timeout takes its place and assignment, no rebalance.
            a.consumer.close(Duration.ofSeconds(10));
            Member again = new Member(c, group, topic, conf);
            pollUntil("the returning static member owning both partitions",
                    () -> again.assignment().equals(all), again);
            assertEquals(generation, again.consumer.groupMetadata().generationId(),
                    "no new generation for a returning static member");
            assertNotEquals(memberId, again.consumer.groupMetadata().memberId());

            d = c.admin().describeConsumerGroups(List.of(group)).describedGroups().get(group)
                    .get();
            assertEquals(1, d.members().size());
            assertEquals("instance-a",
                    d.members().iterator().next().groupInstanceId().orElse(null));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void kip848ConsumerGroupSplitsPartitions(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("kip848", 4);
            String group = Clients.name("kip848-group");
            Set<TopicPartition> all = partitions(topic, 4);

            Member a = new Member(c, group, topic, kip848());
            pollUntil("the first member owning all 4 partitions",
                    () -> a.assignment().equals(all), a);
            Member b = new Member(c, group, topic, kip848());
            pollUntil("the partitions split between two members",
                    () -> splitBetween(all, a, b), a, b);
            assertEquals(2, a.assignment().size());
            assertEquals(2, b.assignment().size());

            produceAll(c, topic, 4, 5);
            pollUntil("20 records read", () -> a.consumed() + b.consumed() == 20, a, b);
            assertEachPartitionReadOnceInOrder(topic, 4, 5, a, b);

            ConsumerGroupDescription d = c.admin().describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            assertEquals(GroupType.CONSUMER, d.type());
            assertEquals(2, d.members().size());
            Set<TopicPartition> described = new HashSet<>();
            for (MemberDescription m : d.members()) {
                described.addAll(m.assignment().topicPartitions());
            }
            assertEquals(all, described);

            b.consumer.close(Duration.ofSeconds(10));
            pollUntil("the first member owning all 4 again after the second left",
                    () -> a.assignment().equals(all), a);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void kip848StaticMemberKeepsItsPartitions(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("kip848-static", 4);
            String group = Clients.name("kip848-static-group");
            Set<TopicPartition> all = partitions(topic, 4);
            Map<String, Object> confA = new HashMap<>(kip848());
            confA.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-a");
            Map<String, Object> confB = new HashMap<>(kip848());
            confB.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-b");

            Member a = new Member(c, group, topic, confA);
            pollUntil("the first member owning all 4", () -> a.assignment().equals(all), a);
            Member b = new Member(c, group, topic, confB);
            pollUntil("a 2+2 split", () -> splitBetween(all, a, b)
                    && a.assignment().size() == 2, a, b);
            Set<TopicPartition> ofB = new HashSet<>(b.assignment());

            ConsumerGroupDescription d = c.admin().describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get();
            Set<String> instances = new HashSet<>();
            d.members().forEach(m -> instances.add(m.groupInstanceId().orElse(null)));
            assertEquals(Set.of("static-a", "static-b"), instances);

            // A static member that leaves and comes back within the session timeout gets the
            // same partitions back; the other member keeps its own throughout.
            b.consumer.close(Duration.ofSeconds(10));
            Member again = new Member(c, group, topic, confB);
            pollUntil("the returning static member owning its old partitions",
                    () -> again.assignment().equals(ofB), a, again);
            Set<TopicPartition> ofA = new HashSet<>(all);
            ofA.removeAll(ofB);
            assertEquals(ofA, a.assignment());
            Set<TopicPartition> revokedFromA = new HashSet<>();
            a.revoked.forEach(revokedFromA::addAll);
            assertEquals(ofB, revokedFromA, "a only gave up what b took the first time");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void kip848RegexSubscriptionGetsEveryMatchingTopic(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String prefix = Clients.name("regex");
            String first = prefix + "-a";
            String second = prefix + "-b";
            String other = prefix + "x-c";
            c.admin().createTopics(List.of(new NewTopic(first, 2, (short) 1),
                    new NewTopic(second, 1, (short) 1), new NewTopic(other, 1, (short) 1)))
                    .all().get();
            produceAll(c, second, 1, 5);
            produceAll(c, other, 1, 5);
            String group = Clients.name("regex-group");
            Member a = new Member(c, group, Pattern.compile(Pattern.quote(prefix) + "-.*"),
                    kip848());
            Set<TopicPartition> all = partitions(first, 2);
            all.addAll(partitions(second, 1));
            pollUntil("the 3 partitions of the 2 matching topics",
                    () -> a.assignment().equals(all), a);
            pollUntil("the matching topic's records read", () -> a.consumed() == 5, a);
            assertEquals(List.of(0L, 1L, 2L, 3L, 4L),
                    a.records.get(new TopicPartition(second, 0)));
            assertEquals(Set.of(new TopicPartition(second, 0)), a.records.keySet(),
                    "nothing read from the topic the pattern does not match");
        }
    }
}
