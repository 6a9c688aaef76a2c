package dev.skein.commerce.app;

import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** What every listener's DLT handler does: log the dead letter with its origin and cause; an operator works on it with `skein dlt`. */
final class DeadLetters {
    private static final Logger log = LoggerFactory.getLogger(DeadLetters.class);

    private DeadLetters() {
    }

    static void log(String group, ConsumerRecord<?, ?> record) {
        log.warn("dead letter for group {}: {}-{}@{} key={} origin={} cause={}: {}", group, record.topic(), record.partition(),
                record.offset(), record.key(), first(record, "kafka_original-topic"),
                last(record, "kafka_exception-cause-fqcn") != null ? last(record, "kafka_exception-cause-fqcn")
                        : last(record, "kafka_exception-fqcn"),
                last(record, "kafka_exception-message"));
    }

    private static String first(ConsumerRecord<?, ?> record, String name) {
        for (Header h : record.headers().headers(name)) {
            return new String(h.value(), StandardCharsets.UTF_8);
        }
        return null;
    }

    private static String last(ConsumerRecord<?, ?> record, String name) {
        Header h = record.headers().lastHeader(name);
        return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }
}
