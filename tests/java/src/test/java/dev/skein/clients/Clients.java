package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The clients one test makes against one broker; closing it closes them all. Names from
 * {@link #name} are unique, so tests share brokers safely.
 */
final class Clients implements AutoCloseable {
    static final Duration DEADLINE = Duration.ofSeconds(60);

    final Target target;
    private final String bootstrap;
    private final List<AutoCloseable> open = new ArrayList<>();
    private Admin admin;

    Clients(Target target) {
        this.target = target;
        this.bootstrap = target.bootstrap();
    }

    static String name(String prefix) {
        return prefix + "-" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);
    }

    String bootstrap() {
        return bootstrap;
    }

    Admin admin() {
        if (admin == null) {
            Properties p = new Properties();
            p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
            p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
            admin = Admin.create(p);
            open.add(admin);
        }
        return admin;
    }

    KafkaProducer<String, String> producer(Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 30000);
        p.putAll(overrides);
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        open.add(() -> producer.close(Duration.ofSeconds(10)));
        return producer;
    }

    KafkaProducer<byte[], byte[]> bytesProducer(Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 30000);
        p.putAll(overrides);
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p);
        open.add(() -> producer.close(Duration.ofSeconds(10)));
        return producer;
    }

    /** A consumer; {@code group} may be null for assign-only use. */
    KafkaConsumer<String, String> consumer(String group, Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        p.putAll(overrides);
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p);
        open.add(() -> consumer.close(Duration.ofSeconds(10)));
        return consumer;
    }

    KafkaConsumer<byte[], byte[]> bytesConsumer(Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.putAll(overrides);
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p);
        open.add(() -> consumer.close(Duration.ofSeconds(10)));
        return consumer;
    }

    /** Creates a topic with replication factor 1 and waits for it. */
    String topic(String prefix, int partitions, Map<String, String> configs) throws Exception {
        String name = name(prefix);
        admin().createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                .all().get();
        waitFor("topic " + name + " in metadata with " + partitions + " partitions", () -> {
            try {
                return admin().describeTopics(List.of(name)).allTopicNames().get()
                        .get(name).partitions().stream().allMatch(p -> p.leader() != null)
                        && admin().describeTopics(List.of(name)).allTopicNames().get()
                        .get(name).partitions().size() == partitions;
            } catch (ExecutionException e) {
                return false;
            } catch (InterruptedException e) {
                throw new RuntimeException(e);
            }
        });
        return name;
    }

    String topic(String prefix, int partitions) throws Exception {
        return topic(prefix, partitions, Map.of());
    }

    /** Polls until {@code count} records arrived (failing on more or on the deadline). */
    static <K, V> List<ConsumerRecord<K, V>> poll(KafkaConsumer<K, V> consumer, int count) {
        List<ConsumerRecord<K, V>> got = new ArrayList<>();
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (got.size() < count) {
            if (System.nanoTime() > deadline) {
                fail("got " + got.size() + " of " + count + " records within "
                        + DEADLINE.toSeconds() + "s");
            }
            consumer.poll(Duration.ofMillis(200)).forEach(got::add);
        }
        assertEquals(count, got.size(), "more records than were produced");
        return got;
    }

    /** Waits for a condition with the suite's deadline. */
    static void waitFor(String what, BooleanSupplier condition) {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("timed out after " + DEADLINE.toSeconds() + "s waiting for " + what);
            }
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                throw new RuntimeException(e);
            }
        }
    }

    /** The cause of a failed future's ExecutionException. */
    static Throwable failure(java.util.concurrent.Future<?> f) throws InterruptedException {
        try {
            f.get();
        } catch (ExecutionException e) {
            return e.getCause();
        }
        fail("expected the call to fail, but it succeeded");
        return null;
    }

    static <T> List<T> list(Collection<T> c) {
        return new ArrayList<>(c);
    }

    @Override
    public void close() {
        for (int i = open.size() - 1; i >= 0; i--) {
            try {
                open.get(i).close();
            } catch (Exception ignored) {
                // Closing is best effort; the test's assertions already ran.
            }
        }
    }
}
