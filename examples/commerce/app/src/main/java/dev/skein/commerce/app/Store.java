package dev.skein.commerce.app;

import dev.skein.commerce.events.EventHeaders;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.stereotype.Component;

/**
 * The consumers' idempotence: {@link #firstTime} inserts (group, eventId) into processed_event and
 * says whether it was new; callers do it inside the same DB transaction as their effect, so an
 * event redelivered after a crash is skipped, and an effect is never recorded without its row.
 * {@link #seen} records an applied event in seen_event (the acceptance test's evidence).
 */
@Component
public class Store {
    private final JdbcTemplate jdbc;

    public Store(JdbcTemplate jdbc) {
        this.jdbc = jdbc;
    }

    public boolean firstTime(String group, String eventId) {
        return jdbc.update("INSERT INTO processed_event (consumer_group, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                group, eventId) == 1;
    }

    public boolean processed(String group, String eventId) {
        return !jdbc.queryForList("SELECT 1 FROM processed_event WHERE consumer_group = ? AND event_id = ?", group, eventId)
                .isEmpty();
    }

    public void seen(String group, String orderId, String eventType, String eventId, ConsumerRecord<?, ?> record) {
        jdbc.update("INSERT INTO seen_event (consumer_group, order_id, event_type, event_id, topic, partition, \"offset\", trace_id)"
                        + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                group, orderId, eventType, eventId, record.topic(), record.partition(), record.offset(),
                KafkaConfig.header(record, EventHeaders.TRACE_ID));
    }

    public JdbcTemplate jdbc() {
        return jdbc;
    }
}
