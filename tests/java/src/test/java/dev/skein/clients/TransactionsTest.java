package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.ListTransactionsOptions;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TransactionalIdNotFoundException;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Transactions with the Java clients: the admin view of a transaction (describe, list),
 * fencing by a second producer, and offsets committed in a transaction becoming visible to
 * the group only on commit.
 */
class TransactionsTest extends BrokerTest {

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void describeAndListTransactions(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("txn-admin", 2);
            String id = Clients.name("txn-admin-id");
            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.TRANSACTIONAL_ID_CONFIG, id,
                    ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 45000));
            producer.initTransactions();
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, 0, "k", "v0")).get();
            producer.send(new ProducerRecord<>(topic, 1, "k", "v1")).get();

            TransactionDescription open = c.admin().describeTransactions(List.of(id))
                    .description(id).get();
            assertEquals(TransactionState.ONGOING, open.state());
            assertEquals(45000, open.transactionTimeoutMs());
            assertTrue(open.transactionStartTimeMs().isPresent());
            assertEquals(Set.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1)),
                    open.topicPartitions());
            long producerId = open.producerId();
            assertTrue(producerId >= 0);

            Set<String> ongoing = c.admin().listTransactions(new ListTransactionsOptions()
                            .filterStates(List.of(TransactionState.ONGOING)))
                    .all().get().stream().map(TransactionListing::transactionalId)
                    .collect(Collectors.toSet());
            assertTrue(ongoing.contains(id), "ongoing transactions " + ongoing);
            Set<String> byProducer = c.admin().listTransactions(new ListTransactionsOptions()
                            .filterProducerIds(Set.of(producerId)))
                    .all().get().stream().map(TransactionListing::transactionalId)
                    .collect(Collectors.toSet());
            assertEquals(Set.of(id), byProducer);

            producer.commitTransaction();
            Clients.waitFor("the transaction to complete", () -> {
                try {
                    TransactionDescription d = c.admin().describeTransactions(List.of(id))
                            .description(id).get();
                    return d.state() == TransactionState.COMPLETE_COMMIT
                            && d.topicPartitions().isEmpty();
                } catch (Exception e) {
                    return false;
                }
            });

            ExecutionException missing = assertThrows(ExecutionException.class, () -> c.admin()
                    .describeTransactions(List.of(Clients.name("no-such-id")))
                    .all().get());
            assertInstanceOf(TransactionalIdNotFoundException.class, missing.getCause());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void aSecondProducerFencesTheFirst(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String topic = c.topic("txn-fence", 1);
            String id = Clients.name("txn-fence-id");
            KafkaProducer<String, String> first = c.producer(Map.of(
                    ProducerConfig.TRANSACTIONAL_ID_CONFIG, id));
            first.initTransactions();
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, 0, "k", "zombie")).get();

            KafkaProducer<String, String> second = c.producer(Map.of(
                    ProducerConfig.TRANSACTIONAL_ID_CONFIG, id));
            second.initTransactions();
            second.beginTransaction();
            second.send(new ProducerRecord<>(topic, 0, "k", "winner"));
            second.commitTransaction();

            assertThrows(ProducerFencedException.class, first::commitTransaction);

            KafkaConsumer<String, String> consumer = c.consumer(null,
                    Map.of("isolation.level", "read_committed"));
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 1);
            assertEquals("winner", got.get(0).value());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("targets")
    void offsetsCommittedInATransactionShowOnlyOnCommit(Target t) throws Exception {
        try (Clients c = new Clients(t)) {
            String input = c.topic("txn-offsets-in", 1);
            String output = c.topic("txn-offsets-out", 1);
            String group = Clients.name("txn-offsets-group");
            TopicPartition in = new TopicPartition(input, 0);
            KafkaProducer<String, String> plain = c.producer(Map.of());
            for (int i = 0; i < 10; i++) {
                plain.send(new ProducerRecord<>(input, 0, "k", "v" + i));
            }
            plain.flush();

            KafkaConsumer<String, String> consumer = c.consumer(group,
                    Map.of("isolation.level", "read_committed"));
            consumer.subscribe(List.of(input));
            List<ConsumerRecord<String, String>> got = Clients.poll(consumer, 10);
            assertEquals(9, got.get(9).offset());

            KafkaProducer<String, String> producer = c.producer(Map.of(
                    ProducerConfig.TRANSACTIONAL_ID_CONFIG, Clients.name("txn-offsets-id")));
            producer.initTransactions();

            // Aborted: the output and the offsets both vanish.
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(output, 0, "k", "aborted"));
            producer.sendOffsetsToTransaction(Map.of(in, new OffsetAndMetadata(5)),
                    consumer.groupMetadata());
            producer.abortTransaction();
            Map<TopicPartition, OffsetAndMetadata> after = c.admin()
                    .listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            assertTrue(!after.containsKey(in) || after.get(in) == null,
                    "aborted offsets must not be committed: " + after);

            // Committed: visible to the group.
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(output, 0, "k", "committed"));
            producer.sendOffsetsToTransaction(Map.of(in, new OffsetAndMetadata(10, "meta")),
                    consumer.groupMetadata());
            producer.commitTransaction();
            Clients.waitFor("the transactional offset commit to be visible", () -> {
                try {
                    OffsetAndMetadata o = c.admin().listConsumerGroupOffsets(group)
                            .partitionsToOffsetAndMetadata().get().get(in);
                    return o != null && o.offset() == 10 && "meta".equals(o.metadata());
                } catch (Exception e) {
                    return false;
                }
            });
            KafkaConsumer<String, String> reader = c.consumer(null,
                    Map.of("isolation.level", "read_committed"));
            TopicPartition out = new TopicPartition(output, 0);
            reader.assign(List.of(out));
            reader.seekToBeginning(List.of(out));
            assertEquals("committed", Clients.poll(reader, 1).get(0).value());
        }
    }
}
